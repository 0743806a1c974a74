// Command worker runs a runpod-orchestrator worker: it takes jobs from a
// Redis submissions stream, runs each on a Runpod Serverless endpoint as a
// checkpointed workflow, and writes exactly one terminal outcome per job.
// Run any number of workers against one Redis; they share the work and take
// over each other's jobs when one stops.
//
//	worker --redis-url redis://redis:6379/0 --runpod-endpoint-id ID   # RUNPOD_API_KEY in the environment
//	worker --dev                                                    # no Redis, no Runpod account
//
// Configuration comes from flags and environment variables (flag wins);
// "worker --help" lists them and docs/operations.md explains them. The worker
// serves Prometheus metrics on /metrics and health checks on /healthz and
// /readyz (--http-addr), and stops gracefully on SIGINT or SIGTERM, handing
// its unfinished jobs to the other workers.
package main
