// Package failover holds tests only: jobs run through the binaries'
// connection code (internal/redisconn) and the library against a real Redis
// Cluster (six redis-server processes, redis-cli --cluster create) and a
// Sentinel setup (master, replica, three redis-sentinel processes), while a
// master is killed midway. Each test checks that every job has one terminal
// outcome and nothing is stuck, and reports the time from the master's
// death to the first job completed afterwards. The tests skip, saying so,
// when redis-cli or redis-sentinel is missing.
package failover
