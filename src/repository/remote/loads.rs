//! Loaded pages in memory, and one load at a time per page.
//!
//! Every warm page request looks its page up here, so the lookup is moka's synchronous cache:
//! its `get` cost ~470 instructions less than the async cache's (a warm page request is ~16k in
//! all). The async cache's `try_get_with` was also its single flight for loads; that is done here
//! instead, with a map of the loads under way. A load runs in its own task, which puts the result
//! in the cache and then leaves the map, so a request that hangs up neither cancels nor restarts
//! it, and a request arriving at any moment finds either the load or its result.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use futures_util::future::{FutureExt, Shared};
use moka::sync::Cache;

use super::RemoteError;
use crate::config::RepoName;
use crate::lock;
use crate::metrics::Metrics;

/// Hashes page keys. Every page request hashes its project name; std's SipHash cost more than
/// the rest of the lookup. foldhash is seeded per process, so names chosen by a client cannot be
/// made to collide.
pub(super) type PageHasher = foldhash::fast::RandomState;

type LoadResult<V> = Result<V, Arc<RemoteError>>;
type SharedLoad<V> = Shared<Pin<Box<dyn Future<Output = LoadResult<V>> + Send>>>;

/// A cache of loaded values with a single flight per key.
pub(super) struct Loads<K, V> {
    /// Named in the error of a load task that panicked.
    repo: RepoName,
    cache: Cache<K, V, PageHasher>,
    running: Arc<Mutex<HashMap<K, SharedLoad<V>, PageHasher>>>,
    /// Where a request that joins a load under way is counted.
    metrics: Arc<Metrics>,
}

impl<K, V> Loads<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    pub(super) fn new(
        repo: RepoName,
        cache: Cache<K, V, PageHasher>,
        metrics: Arc<Metrics>,
    ) -> Loads<K, V> {
        Loads {
            repo,
            cache,
            running: Arc::new(Mutex::new(HashMap::default())),
            metrics,
        }
    }

    /// The value for `key`, loaded by `load` if it is not in memory: one load per key at a time,
    /// shared by every request that arrives while it runs. The flag says whether this caller's
    /// `load` was the one that ran.
    pub(super) async fn get_or_load<F>(
        &self,
        key: &K,
        load: impl FnOnce() -> F,
    ) -> Result<(V, bool), RemoteError>
    where
        F: Future<Output = Result<V, RemoteError>> + Send + 'static,
    {
        if let Some(value) = self.cache.get(key) {
            return Ok((value, false));
        }
        let (flight, ran_here) = {
            let mut running = lock(&self.running);
            // Checked again under the lock: a load may have finished since the lookup above.
            if let Some(value) = self.cache.get(key) {
                return Ok((value, false));
            }
            match running.get(key) {
                Some(flight) => {
                    self.metrics.record_page_join();
                    (flight.clone(), false)
                }
                None => {
                    let flight = self.start(key.clone(), load());
                    running.insert(key.clone(), flight.clone());
                    (flight, true)
                }
            }
        };
        flight
            .await
            .map(|value| (value, ran_here))
            .map_err(RemoteError::Shared)
    }

    /// Drops the value held for `key`; a load under way still stores its result.
    pub(super) fn forget(&self, key: &K) {
        self.cache.invalidate(key);
    }

    /// Spawns the load; its task stores the result and leaves the map, in that order.
    fn start<F>(&self, key: K, load: F) -> SharedLoad<V>
    where
        F: Future<Output = Result<V, RemoteError>> + Send + 'static,
    {
        let cache = self.cache.clone();
        let running = self.running.clone();
        let repo = self.repo.clone();
        let task = tokio::spawn(async move {
            let result = load.await.map_err(Arc::new);
            if let Ok(value) = &result {
                cache.insert(key.clone(), value.clone());
            }
            lock(&running).remove(&key);
            result
        });
        let joined = async move {
            task.await.unwrap_or_else(|join| {
                Err(Arc::new(RemoteError::Task {
                    repo,
                    reason: join.to_string(),
                }))
            })
        };
        let boxed: Pin<Box<dyn Future<Output = LoadResult<V>> + Send>> = Box::pin(joined);
        boxed.shared()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    fn loads() -> Loads<u32, String> {
        let repo = RepoName::parse("pypi").unwrap();
        Loads::new(
            repo,
            Cache::builder()
                .max_capacity(100)
                .build_with_hasher(PageHasher::default()),
            Arc::default(),
        )
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_requests_share_one_load() {
        let loads = Arc::new(loads());
        let calls = Arc::new(AtomicUsize::new(0));
        let (open, gate) = tokio::sync::watch::channel(false);
        let request = |loads: Arc<Loads<u32, String>>| {
            let (calls, mut gate) = (calls.clone(), gate.clone());
            tokio::spawn(async move {
                loads
                    .get_or_load(&7, move || async move {
                        calls.fetch_add(1, Ordering::SeqCst);
                        let _ = gate.wait_for(|open| *open).await;
                        Ok("page 7".to_owned())
                    })
                    .await
            })
        };
        // The leader's load starts and waits at the gate; then nineteen more requests arrive.
        let leader = request(loads.clone());
        while calls.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let mut followers: Vec<_> = (0..19).map(|_| request(loads.clone())).collect();
        tokio::time::sleep(Duration::from_millis(20)).await;
        // One follower hangs up while the load runs: the load goes on for the others.
        followers.remove(0).abort();
        open.send_replace(true);
        let (value, ran_here) = leader.await.unwrap().unwrap();
        assert_eq!((value.as_str(), ran_here), ("page 7", true));
        for follower in followers {
            let (value, ran_here) = follower.await.unwrap().unwrap();
            assert_eq!((value.as_str(), ran_here), ("page 7", false));
        }
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "one load for twenty requests"
        );
        let (value, ran_here) = loads
            .get_or_load(&7, || async { unreachable!("cached") })
            .await
            .unwrap();
        assert_eq!((value.as_str(), ran_here), ("page 7", false));
    }

    #[tokio::test]
    async fn failures_are_shared_but_not_kept() {
        let loads = loads();
        let failed = loads
            .get_or_load(&1, || async {
                Err(RemoteError::Task {
                    repo: RepoName::parse("pypi").unwrap(),
                    reason: "upstream down".into(),
                })
            })
            .await;
        assert!(matches!(failed, Err(RemoteError::Shared(_))), "{failed:?}");
        let (value, ran_here) = loads
            .get_or_load(&1, || async { Ok("back".to_owned()) })
            .await
            .unwrap();
        assert_eq!((value.as_str(), ran_here), ("back", true));
    }
}
