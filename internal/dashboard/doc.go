// Package dashboard is the orchestrator's web dashboard: server-rendered
// pages over package client's read APIs (Stats, List, Get, Dead, the events
// subscription) and its two writes (Retry, Cancel). It never talks to Redis
// itself.
//
// Pages: the overview (backlog and throughput over time as server-side SVG,
// jobs by state, consumers and workers), the job list by state, one job's
// page (record, input, output, Runpod ids, timings, event history) and the
// dead-letter list with Retry and Cancel buttons. Pages update live: a small
// script of ours (assets/app.js, no third-party JavaScript) listens to
// /events (server-sent events fed by one shared events subscription and by
// the sampler) and re-fetches the page's live part.
//
// There is no authentication. Serve it on loopback (submitter ui's default)
// or behind a proxy that authenticates. The writes are POST only and refused
// from another origin (http.CrossOriginProtection: Sec-Fetch-Site, Origin);
// requests whose Host is a DNS name not in Config.AllowedHosts are refused,
// so a DNS-rebinding page cannot reach a loopback dashboard. Pages carry no
// secret: the dashboard is never given the Redis URL or the Runpod key, and
// errors from Redis are logged, not shown.
//
// A Server's history (the charts) is in memory and starts empty: Run samples
// Stats every Config.SampleInterval and counts outcomes from the events
// stream; run it for as long as the handler serves.
package dashboard
