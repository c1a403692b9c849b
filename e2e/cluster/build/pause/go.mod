// The pod sandbox ("pause") process for the local cluster's containerd.
module splitserve.dev/e2e/pause

go 1.24.0
