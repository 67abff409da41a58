"""The worker's control plane, Faust agents beside the data plane (`plane`): model
versions announced on `models`, explain requests answered, and the challenger's
shadow of the champion's explanations (`shadow`)."""
