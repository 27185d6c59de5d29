//! One way to reach Redis for every block that uses it (leases, waiting rooms, rate limits, push,
//! the shared cache tier): a single server or a Redis Cluster, chosen by the URL.
//!
//! **URL forms.**
//! - `redis://[user:password@]host:port[/db]`: one server, through a
//!   [`redis::aio::ConnectionManager`] (reconnects by itself).
//! - `redis+cluster://[user:password@]host:port,host:port,…`: a Redis Cluster. The listed nodes
//!   are only seeds (one reachable node is enough; the client learns the slot map from it), the
//!   credentials apply to every node, and a cluster has database 0 only. Commands go through
//!   [`redis::cluster_async::ClusterConnection`], which routes each command to the primary that
//!   owns its key's slot and follows `MOVED`/`ASK` while slots migrate. A list of seed URLs
//!   (`redis://…` each) works too, through [`RedisTarget::cluster`]. One URL string was chosen
//!   so a node's configuration stays one setting whatever the deployment.
//!
//! Either way the blocks get a [`RedisConnection`], which is a [`redis::aio::ConnectionLike`],
//! so scripts, commands and pipelines are written once.
//!
//! **What a cluster asks of the blocks.** Every key one operation (a Lua script, a multi-key
//! command, a pipeline) touches must live in one slot, and a script must receive every key it
//! touches in `KEYS`: the cluster routes a script by its first key and refuses keys of another
//! slot. The blocks therefore build their keys as `{prefix}{{tag}}…`, where the tag (the part in
//! braces, see [`hash_tag`]) is what groups an operation's keys: per event, per channel, per
//! cache key. Because every key of one operation shares the text up to and including the tag's
//! closing brace, they hash alike even when the configured prefix itself holds a brace (then
//! everything may share one slot, which is correct, only less spread).
//!
//! Pub/sub is the exception to "commands are routed for you": [`ShardedSubscriber`] keeps one
//! RESP3 connection per node it needs and sends each `SSUBSCRIBE` to the node owning the
//! channel's slot (Redis 7 sharded pub/sub).

mod subscriber;

pub use subscriber::{ShardMessage, ShardedSubscriber, Wanted};

use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, ConnectionInfo, ErrorKind, IntoConnectionInfo, RedisError, RedisFuture, Value};
use std::fmt;

/// The scheme of a cluster URL.
pub const CLUSTER_SCHEME: &str = "redis+cluster://";

/// Where Redis is: one server, or the seed nodes of a cluster.
#[derive(Clone)]
pub enum RedisTarget {
    Single(ConnectionInfo),
    Cluster(Vec<ConnectionInfo>),
}

impl fmt::Debug for RedisTarget {
    // Addresses only: the derived form would print passwords.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RedisTarget::Single(info) => write!(f, "Single({})", info.addr),
            RedisTarget::Cluster(seeds) => {
                let seeds: Vec<String> = seeds.iter().map(|seed| seed.addr.to_string()).collect();
                write!(f, "Cluster({})", seeds.join(","))
            }
        }
    }
}

fn config_error(detail: String) -> RedisError {
    RedisError::from((
        ErrorKind::InvalidClientConfig,
        "invalid Redis configuration",
        detail,
    ))
}

impl RedisTarget {
    /// Reads `redis://…` (one server) or `redis+cluster://host:port,host:port` (a cluster).
    pub fn parse(url: &str) -> redis::RedisResult<RedisTarget> {
        let Some(rest) = url.strip_prefix(CLUSTER_SCHEME) else {
            return Ok(RedisTarget::Single(url.into_connection_info()?));
        };
        // host,host[/path][?query]: the path and query apply to every seed.
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, suffix) = rest.split_at(end);
        let (credentials, hosts) = match authority.rsplit_once('@') {
            Some((credentials, hosts)) => (format!("{credentials}@"), hosts),
            None => (String::new(), authority),
        };
        let seeds: Vec<String> = hosts
            .split(',')
            .map(str::trim)
            .filter(|host| !host.is_empty())
            .map(|host| format!("redis://{credentials}{host}{suffix}"))
            .collect();
        if seeds.is_empty() {
            return Err(config_error(format!(
                "{CLUSTER_SCHEME} needs at least one host:port"
            )));
        }
        RedisTarget::cluster(&seeds)
    }

    /// A cluster reached through these seed URLs (`redis://host:port` each).
    pub fn cluster<S: AsRef<str>>(seeds: &[S]) -> redis::RedisResult<RedisTarget> {
        let seeds = seeds
            .iter()
            .map(|seed| seed.as_ref().into_connection_info())
            .collect::<redis::RedisResult<Vec<_>>>()?;
        if seeds.is_empty() {
            return Err(config_error("a cluster needs at least one seed".into()));
        }
        Ok(RedisTarget::Cluster(seeds))
    }

    pub fn is_cluster(&self) -> bool {
        matches!(self, RedisTarget::Cluster(_))
    }

    /// Connects: a `ConnectionManager` to one server, or a cluster connection.
    pub async fn connect(&self) -> redis::RedisResult<RedisConnection> {
        match self {
            RedisTarget::Single(info) => {
                let client = redis::Client::open(info.clone())?;
                Ok(RedisConnection::Single(
                    ConnectionManager::new(client).await?,
                ))
            }
            RedisTarget::Cluster(seeds) => {
                let client = redis::cluster::ClusterClient::new(seeds.clone())?;
                Ok(RedisConnection::Cluster(
                    client.get_async_connection().await?,
                ))
            }
        }
    }
}

/// Parses `url` (see the crate docs for its two forms) and connects.
pub async fn connect(url: &str) -> redis::RedisResult<RedisConnection> {
    RedisTarget::parse(url)?.connect().await
}

/// A connection to one server or to a cluster; cheap to clone (clones share the connection).
// Not boxed: a handful exist, and each operation clones one, which a box would make an
// allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Clone)]
pub enum RedisConnection {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl RedisConnection {
    pub fn is_cluster(&self) -> bool {
        matches!(self, RedisConnection::Cluster(_))
    }
}

impl From<ConnectionManager> for RedisConnection {
    fn from(connection: ConnectionManager) -> Self {
        RedisConnection::Single(connection)
    }
}

impl From<ClusterConnection> for RedisConnection {
    fn from(connection: ClusterConnection) -> Self {
        RedisConnection::Cluster(connection)
    }
}

impl ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            RedisConnection::Single(connection) => connection.req_packed_command(cmd),
            RedisConnection::Cluster(connection) => connection.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            RedisConnection::Single(connection) => {
                connection.req_packed_commands(pipeline, offset, count)
            }
            RedisConnection::Cluster(connection) => {
                connection.req_packed_commands(pipeline, offset, count)
            }
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            RedisConnection::Single(connection) => connection.get_db(),
            RedisConnection::Cluster(connection) => connection.get_db(),
        }
    }
}

/// The hash tag of `key` as Redis Cluster reads it: the text between the first `{` and the
/// first `}` after it, when that text is not empty. Keys with one tag share a slot.
pub fn hash_tag(key: &str) -> Option<&str> {
    let open = key.find('{')?;
    let after = &key[open + 1..];
    let close = after.find('}')?;
    Some(&after[..close]).filter(|tag| !tag.is_empty())
}

/// The cluster slot of `key` (its hash tag's, when it has one).
pub fn slot(key: &[u8]) -> u16 {
    redis::cluster_routing::get_slot(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_tags_follow_the_redis_rule() {
        assert_eq!(hash_tag("seat:{e1}:a"), Some("e1"));
        assert_eq!(hash_tag("{a}{b}"), Some("a"));
        assert_eq!(hash_tag("x{}y{z}"), None, "an empty first tag means no tag");
        assert_eq!(hash_tag("x{y"), None);
        assert_eq!(hash_tag("plain"), None);
        assert_eq!(slot(b"p{e1}:a"), slot(b"q{e1}:b"));
    }

    #[test]
    fn cluster_urls_name_their_seeds() {
        let target =
            RedisTarget::parse("redis+cluster://user:pw@10.0.0.1:7000,10.0.0.2:7001").expect("url");
        let RedisTarget::Cluster(seeds) = &target else {
            panic!("expected a cluster, got {target:?}");
        };
        let addresses: Vec<String> = seeds.iter().map(|seed| seed.addr.to_string()).collect();
        assert_eq!(addresses, ["10.0.0.1:7000", "10.0.0.2:7001"]);
        assert!(seeds
            .iter()
            .all(|seed| seed.redis.password.as_deref() == Some("pw")
                && seed.redis.username.as_deref() == Some("user")));
        assert!(!format!("{target:?}").contains("pw"));
        assert!(RedisTarget::parse("redis+cluster://").is_err());
        assert!(matches!(
            RedisTarget::parse("redis://127.0.0.1:6379/2").expect("url"),
            RedisTarget::Single(info) if info.redis.db == 2
        ));
    }
}
