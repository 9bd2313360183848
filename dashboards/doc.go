// Package dashboards holds eddy's Grafana dashboards and Prometheus rules as
// code. The panels are plain data (Dashboards) so that tests can check every
// query against the metrics eddy exports and a real Prometheus can evaluate
// them; Build turns them into Grafana dashboards with the Grafana Foundation
// SDK, and `make generate` writes the JSON that is committed under json/.
package dashboards
