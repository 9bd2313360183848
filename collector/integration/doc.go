// Package integration holds the collector's tests against real components:
// a kube-apiserver (test/controlplane) and, as root, the kernel recorder with
// processes in simulated pod cgroups. It has no non-test code.
package integration
