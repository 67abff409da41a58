"""The model layer: what a registered model version is and how it is stored
(`registry`), its SHAP and input references (`reference`, `input_reference`), what
its raw score means (`objectives`), its reason codes (`reason_codes`), registering
a model file (`register`) and listing versions (`catalog`), the `models` topic's
events (`events`), and explaining a version's rows, live or by the fallback
(`explainer`, `saabas`)."""
