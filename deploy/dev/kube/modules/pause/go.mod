// The pod sandbox's process (what registry.k8s.io/pause is upstream): no registry is reachable here, so the node
// builds its own sandbox image from this program.
module llmhub.dev/devkube/pause

go 1.24.0
