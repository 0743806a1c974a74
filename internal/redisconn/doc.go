// Package redisconn turns the binaries' Redis settings (a URL and TLS
// files) into a go-redis client: one server, a Redis Cluster, or a
// Sentinel-managed master. cmd/worker, cmd/submitter and the dev tools use
// it, so every binary accepts the same forms and reports the same errors;
// the libraries keep taking any redis.UniversalClient.
//
// # URL forms
//
//	redis://[user:password@]host:port[/db][?option=value...]      one server
//	rediss://...                                                  one server over TLS
//	unix://[user:password@]/path/redis.sock[?db=N]               one server on a socket
//	redis+cluster://[user:password@]host:port[,host:port...]     Redis Cluster (seed nodes)
//	redis://[user:password@]host:port,host:port[,...]            the same (several addresses)
//	redis+sentinel://[user:password@]host:port[,host:port...]/MASTER[/db][?sentinel_password=...]
//	redis://host:port[,...]?master_name=MASTER                   the same (Sentinel)
//
// rediss+cluster:// and rediss+sentinel:// use TLS. The user and password
// are those of the data nodes (the cluster's nodes, or the master and its
// replicas); Sentinel's own credentials, when it has any, are the query
// options sentinel_username and sentinel_password. Other query options are
// go-redis's (snake_case option names: dial_timeout=3s, pool_size=20, ...).
//
// # Failover
//
// Cluster and Sentinel clients get settings that ride out a promotion
// without stalling: the slot map is reloaded every ClusterReloadInterval and
// at once when a node connection fails or a node answers CLUSTERDOWN, and
// commands are retried for about RetryWindow (MaxRetries, MinRetryBackoff,
// MaxRetryBackoff, unless the URL sets them). A command's round trip is
// bounded by ReadTimeout and WriteTimeout, a connect by DialTimeout, so a
// master that goes silent instead of refusing connections costs seconds,
// not the kernel's TCP timeouts (URL options read_timeout, write_timeout,
// dial_timeout win).
//
// # Secrets
//
// No error or String of this package contains a password: URLs are shown
// with passwords replaced by "xxxxx" (Redact). Secrets returns the
// passwords, so a caller can redact them from text it did not produce.
package redisconn
