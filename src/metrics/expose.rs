//! Writing the metrics in the Prometheus text format, with prometheus-client's encoder.
//!
//! The counters live in wheelgate's own atomic arrays (see the parent module); at scrape time a
//! collector reads them and hands each series to prometheus-client, which writes the names,
//! `HELP`/`TYPE` lines, label escaping and histogram buckets. Counter series that are still zero
//! are left out, so the exposition holds what happened rather than every label combination.

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::histogram::Snapshot;
use super::labels::{status_label, CACHE_OUTCOMES, STATUS_SLOTS};
use super::{
    CacheKind, Gauges, Metrics, ReloadResult, RepoMetrics, Route, SharedOutcome, Source,
    UploadOutcome, UpstreamOutcome,
};
use crate::lock;

/// The `Content-Type` of the exposition.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

pub(super) fn encode(metrics: Arc<Metrics>, gauges: Gauges) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Scrape { metrics, gauges }));
    let mut text = String::new();
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::prometheus_text::encode(&mut text, &registry);
    text
}

#[derive(Debug)]
struct Scrape {
    metrics: Arc<Metrics>,
    gauges: Gauges,
}

type Result = std::result::Result<(), std::fmt::Error>;

fn counter(encoder: &mut MetricEncoder<'_>, labels: &impl EncodeLabelSet, value: u64) -> Result {
    encoder
        .encode_family(labels)?
        .encode_counter::<NoLabelSet, u64, u64>(&value, None)
}

fn histogram(encoder: &mut MetricEncoder<'_>, snapshot: &Snapshot) -> Result {
    encoder.encode_histogram::<NoLabelSet>(
        snapshot.sum_seconds,
        snapshot.count,
        &snapshot.buckets,
        None,
    )
}

impl Scrape {
    fn repositories(&self) -> Vec<Arc<RepoMetrics>> {
        let mut all = lock(&self.metrics.repositories).clone();
        all.push(self.metrics.unknown.clone());
        all
    }
}

/// The labels of one series: names with borrowed or made values.
type Labels<'a, const N: usize> = [(&'static str, Cow<'a, str>); N];

/// One counter family; series still at zero are left out unless `zeros`.
fn counters<L: EncodeLabelSet>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    series: impl IntoIterator<Item = (L, u64)>,
    zeros: bool,
) -> Result {
    let mut e = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, value) in series {
        if zeros || value > 0 {
            counter(&mut e, &labels, value)?;
        }
    }
    Ok(())
}

/// One series per repository and label value: `value(repo, index)` reads slot `index`.
fn per_repository<'a, T: Copy + 'a>(
    repositories: &'a [Arc<RepoMetrics>],
    values: &'a [T],
    label: &'static str,
    as_str: fn(T) -> &'static str,
    value: fn(&RepoMetrics, usize) -> u64,
) -> impl Iterator<Item = (Labels<'a, 2>, u64)> + 'a {
    repositories.iter().flat_map(move |repo| {
        values.iter().enumerate().map(move |(index, v)| {
            let labels = [
                ("repository", Cow::Borrowed(repo.name())),
                (label, Cow::Borrowed(as_str(*v))),
            ];
            (labels, value(repo, index))
        })
    })
}

fn load(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result {
        let metrics = &self.metrics;
        let repositories = self.repositories();

        let requests = repositories.iter().flat_map(|repo| {
            Route::ALL.into_iter().flat_map(move |route| {
                (0..STATUS_SLOTS).map(move |slot| {
                    let labels: Labels<'_, 3> = [
                        ("repository", Cow::Borrowed(repo.name())),
                        ("route", Cow::Borrowed(route.as_str())),
                        ("status", Cow::Owned(status_label(slot))),
                    ];
                    (labels, load(&repo.requests[route.index()][slot]))
                })
            })
        });
        counters(
            &mut encoder,
            "wheelgate_http_requests",
            "Requests answered, by repository (\"-\" for none), route and status code.",
            requests,
            false,
        )?;

        let mut e = encoder.encode_descriptor(
            "wheelgate_http_request_duration_seconds",
            "Time from a request's arrival to its response head, by route.",
            None,
            MetricType::Histogram,
        )?;
        for route in Route::ALL {
            let snapshot = metrics.durations[route.index()].snapshot();
            if snapshot.count > 0 {
                histogram(
                    &mut e.encode_family(&[("route", route.as_str())])?,
                    &snapshot,
                )?;
            }
        }

        let cache = repositories.iter().flat_map(|repo| {
            CacheKind::ALL.into_iter().flat_map(move |kind| {
                CACHE_OUTCOMES.into_iter().map(move |status| {
                    let labels: Labels<'_, 3> = [
                        ("repository", Cow::Borrowed(repo.name())),
                        ("kind", Cow::Borrowed(kind.as_str())),
                        ("outcome", Cow::Borrowed(status.as_str())),
                    ];
                    (labels, repo.cache_count(kind, status))
                })
            })
        });
        counters(
            &mut encoder,
            "wheelgate_cache_requests",
            "Pages and files served, by repository, kind and how the cache was involved.",
            cache,
            false,
        )?;

        counters(
            &mut encoder,
            "wheelgate_served_bytes",
            "Bytes of page and file bodies sent to clients, by where they came from.",
            Source::ALL.map(|source| {
                (
                    [("source", source.as_str())],
                    load(&metrics.served_bytes[source as usize]),
                )
            }),
            true,
        )?;

        counters(
            &mut encoder,
            "wheelgate_shared_bucket_requests",
            "Uses of the bucket central replicas share ([store.shared]), by outcome: a file \
             found, missing or failed when asked for, and copied, present or failed to copy after \
             an upstream fetch.",
            SharedOutcome::ALL.map(|outcome| {
                (
                    [("outcome", outcome.as_str())],
                    load(&metrics.shared[outcome as usize]),
                )
            }),
            true,
        )?;

        counters(
            &mut encoder,
            "wheelgate_upstream_requests",
            "Requests to upstreams (retries included), by repository and outcome.",
            per_repository(
                &repositories,
                &UpstreamOutcome::ALL,
                "outcome",
                UpstreamOutcome::as_str,
                |repo, index| load(&repo.upstream[index]),
            ),
            false,
        )?;

        let e = encoder.encode_descriptor(
            "wheelgate_upstream_request_duration_seconds",
            "Time of upstream requests: to the last byte for pages, to the response head for files.",
            None,
            MetricType::Histogram,
        )?;
        histogram(&mut { e }, &metrics.upstream_duration.snapshot())?;

        let denials = lock(&metrics.recent).denial_counts();
        counters(
            &mut encoder,
            "wheelgate_denials",
            "Downloads refused (mode enforce) or that would have been (mode audit), by repository, \
             kind (rule or origin), the rule or package group's name (at most 100 names, then \
             \"other\") and mode.",
            denials.iter().map(|(series, value)| {
                let labels: Labels<'_, 4> = [
                    ("repository", Cow::Borrowed(series.repository.as_str())),
                    ("kind", Cow::Borrowed(series.kind)),
                    ("name", Cow::Borrowed(series.name.as_str())),
                    ("mode", Cow::Borrowed(series.mode)),
                ];
                (labels, *value)
            }),
            false,
        )?;

        let e = encoder.encode_descriptor(
            "wheelgate_singleflight_joins",
            "Requests that joined a page load or a file download another request had started.",
            None,
            MetricType::Counter,
        )?;
        let joins = load(&metrics.page_joins) + self.gauges.file_joins;
        { e }.encode_counter::<NoLabelSet, u64, u64>(&joins, None)?;

        for (name, help, value) in [
            (
                "wheelgate_store_bytes",
                "Bytes of the artifacts in the store.",
                self.gauges.store_bytes,
            ),
            (
                "wheelgate_store_artifacts",
                "Artifacts (files, metadata, provenance) in the store.",
                self.gauges.store_artifacts,
            ),
        ] {
            let e = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            { e }.encode_gauge(&i64::try_from(value).unwrap_or(i64::MAX))?;
        }
        if let Some(up) = self.gauges.shared_bucket_up {
            let e = encoder.encode_descriptor(
                "wheelgate_shared_bucket_up",
                "1 while the bucket central replicas share ([store.shared]) answers, 0 while it \
                 is unreachable (uploads are refused, files are served from the local store).",
                None,
                MetricType::Gauge,
            )?;
            { e }.encode_gauge(&i64::from(up))?;
        }

        counters(
            &mut encoder,
            "wheelgate_uploads",
            "Uploads to hosted repositories, by repository and outcome.",
            per_repository(
                &repositories,
                &UploadOutcome::ALL,
                "outcome",
                UploadOutcome::as_str,
                |repo, index| load(&repo.uploads[index]),
            ),
            false,
        )?;

        counters(
            &mut encoder,
            "wheelgate_config_reloads",
            "Configuration reloads, by result.",
            ReloadResult::ALL.map(|result| {
                (
                    [("result", result.as_str())],
                    load(&metrics.reloads[result as usize]),
                )
            }),
            true,
        )?;

        let e = encoder.encode_descriptor(
            "wheelgate_auth_failures",
            "Requests whose credentials were malformed, unknown or wrong.",
            None,
            MetricType::Counter,
        )?;
        let failures = load(&metrics.auth_failures);
        { e }.encode_counter::<NoLabelSet, u64, u64>(&failures, None)?;

        let e = encoder.encode_descriptor(
            "wheelgate_open_connections",
            "Client connections open now.",
            None,
            MetricType::Gauge,
        )?;
        let open = i64::try_from(load(&metrics.open_connections)).unwrap_or(i64::MAX);
        { e }.encode_gauge(&open)?;

        let e = encoder.encode_descriptor(
            "wheelgate_connection_header_timeouts",
            "Connections closed because no complete request head came within \
             [server] request_header_timeout of their accept (silent or slow clients, unfinished \
             TLS handshakes).",
            None,
            MetricType::Counter,
        )?;
        let timeouts = load(&metrics.header_timeouts);
        { e }.encode_counter::<NoLabelSet, u64, u64>(&timeouts, None)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Mode;
    use crate::config::RepoName;
    use crate::metrics::{Denial, DenialKind};
    use crate::repository::CacheStatus;
    use crate::simple::name::ProjectName;
    use std::time::Duration;

    #[test]
    fn the_exposition_names_every_metric_with_its_labels() {
        let metrics = Arc::new(Metrics::default());
        let pypi = RepoName::parse("pypi").unwrap();
        let repo = metrics.repository(&pypi);
        assert!(Arc::ptr_eq(&repo, &metrics.repository(&pypi)));
        metrics.record_request(&repo, Route::Project, 200, Duration::from_micros(300));
        metrics.record_request(&repo, Route::Project, 200, Duration::from_millis(3));
        metrics.record_request(metrics.no_repository(), Route::Health, 418, Duration::ZERO);
        repo.record_cache(CacheKind::Page, CacheStatus::Miss);
        metrics.record_served(Source::Cache, 1234);
        metrics.record_upstream(&repo, UpstreamOutcome::Timeout, Duration::from_secs(1));
        metrics.record_denial(Denial {
            repository: &pypi,
            package: &ProjectName::parse("evil").unwrap(),
            version: Some("1.0"),
            kind: DenialKind::Rule,
            name: "no \"evil\"",
            mode: Mode::Enforce,
        });
        metrics.record_upload(&repo, UploadOutcome::Created);
        metrics.record_reload(ReloadResult::Failure);
        metrics.record_auth_failure();
        metrics.record_page_join();
        metrics.record_connection_opened();
        metrics.record_connection_opened();
        metrics.record_connection_closed();
        metrics.record_header_timeout();
        let text = metrics.encode(Gauges {
            shared_bucket_up: Some(false),
            store_bytes: 99,
            store_artifacts: 3,
            file_joins: 2,
        });
        for line in [
            "# TYPE wheelgate_http_requests_total counter",
            "wheelgate_http_requests_total{repository=\"pypi\",route=\"project\",status=\"200\"} 2",
            "wheelgate_http_requests_total{repository=\"-\",route=\"health\",status=\"other\"} 1",
            "wheelgate_http_request_duration_seconds_bucket{route=\"project\",le=\"0.0005\"} 1",
            "wheelgate_http_request_duration_seconds_bucket{route=\"project\",le=\"0.005\"} 2",
            "wheelgate_http_request_duration_seconds_count{route=\"project\"} 2",
            "wheelgate_cache_requests_total{repository=\"pypi\",kind=\"page\",outcome=\"miss\"} 1",
            "wheelgate_served_bytes_total{source=\"cache\"} 1234",
            "wheelgate_served_bytes_total{source=\"upstream\"} 0",
            "wheelgate_upstream_requests_total{repository=\"pypi\",outcome=\"timeout\"} 1",
            "wheelgate_upstream_request_duration_seconds_count 1",
            "wheelgate_denials_total{repository=\"pypi\",kind=\"rule\",name=\"no \\\"evil\\\"\",mode=\"enforce\"} 1",
            "wheelgate_singleflight_joins_total 3",
            "wheelgate_store_bytes 99",
            "wheelgate_store_artifacts 3",
            "wheelgate_uploads_total{repository=\"pypi\",outcome=\"created\"} 1",
            "wheelgate_config_reloads_total{result=\"failure\"} 1",
            "wheelgate_config_reloads_total{result=\"success\"} 0",
            "wheelgate_auth_failures_total 1",
            "# TYPE wheelgate_open_connections gauge",
            "wheelgate_open_connections 1",
            "wheelgate_connection_header_timeouts_total 1",
            "wheelgate_shared_bucket_up 0",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing line {line}\n{text}"
            );
        }
    }
}
