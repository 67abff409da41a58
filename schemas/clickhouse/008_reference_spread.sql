-- The spread of the reference sample's attributions: mean SHAP² per feature
-- (with n_reference, the standard error of reference_mean_abs_shap). The drift
-- monitor needs it to tell a moved mean |SHAP| from a reference that is itself
-- a sample. References registered before this column read 0: no spread known.
ALTER TABLE {db}.model_reference
    ADD COLUMN IF NOT EXISTS reference_mean_sq_shap Float64 DEFAULT 0 AFTER reference_mean_shap;
