package demo

// components are eddy's processes, each running as its service account
// eddy-system/eddy-<component> (controlplane.Env.InstallIdentities).
var components = []string{"analyzer", "collector", "webhook", "operator"}
