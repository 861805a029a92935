// WorkerMetrics: a worker program's Prometheus metrics, served on their
// own port.
//
// kvtier-run serves them (--metrics-listen; worker/tools/run_metrics.h). A
// worker program loads OpenBLAS, whose static TLS the exposer's threads
// must make room for: common/metrics_endpoint.cc says how they do.
//
//   ASSIGN_OR_RETURN(auto metrics, WorkerMetrics::Start("127.0.0.1:9465"));
//   metrics->SetSource([&] { return SnapshotOf(session); });  // read at each scrape
//
// The families (each scrape calls the source once):
//   kvtier_worker_pages_recalled_total, kvtier_worker_recalled_bytes_total
//   kvtier_worker_recall_seconds_total      time decode steps spent recalling
//   kvtier_worker_decode_steps_total        layer steps, so recall seconds per
//                                           step is the recall latency
//   kvtier_worker_pages_backed_up_total, kvtier_worker_pages_evicted_total,
//   kvtier_worker_pages_dropped_total
//   kvtier_worker_budget_pages              pages the device pool may hold
//   kvtier_worker_resident_pages            pages it holds now
//   kvtier_worker_prefix_pages_loaded_total, kvtier_worker_prefix_loaded_bytes_total,
//   kvtier_worker_prefix_pages_rejected_total  loaded prefixes (reuse)
//   kvtier_worker_prefix_decisions_total{decision="load|recompute"}
//
// Thread-safety: thread-safe; the source runs on the exposer's threads.
#ifndef KVTIER_WORKER_METRICS_WORKER_METRICS_H_
#define KVTIER_WORKER_METRICS_WORKER_METRICS_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"

namespace prometheus {
class Exposer;
}  // namespace prometheus

namespace kvtier::worker {

// What the worker has done so far (cumulative, except the two gauges).
struct WorkerSnapshot {
  uint64_t pages_recalled = 0;
  // Of those, pages another writer had stored first under the same key,
  // with bytes of its own that passed the store's checksum.
  uint64_t pages_recalled_foreign = 0;
  uint64_t bytes_recalled = 0;
  double recall_seconds = 0;
  uint64_t decode_steps = 0;
  uint64_t pages_backed_up = 0;
  uint64_t pages_evicted = 0;
  uint64_t pages_dropped = 0;
  uint64_t budget_pages = 0;    // gauge
  uint64_t resident_pages = 0;  // gauge
  uint64_t prefix_pages_loaded = 0;
  uint64_t prefix_bytes_loaded = 0;
  uint64_t prefix_pages_rejected = 0;
  uint64_t prefix_loads = 0;       // requests that loaded their prefix
  uint64_t prefix_recomputes = 0;  // requests that recomputed it
};

class WorkerMetrics {
 public:
  // Serves /metrics on `listen` (host:port; port 0 picks one); empty: no
  // endpoint (Render still works). INVALID_ARGUMENT for a malformed
  // address, UNAVAILABLE when it cannot be bound.
  static absl::StatusOr<std::unique_ptr<WorkerMetrics>> Start(const std::string& listen);
  ~WorkerMetrics();

  int port() const { return port_; }
  void SetSource(std::function<WorkerSnapshot()> source) ABSL_LOCKS_EXCLUDED(mu_);
  // Prometheus' text format, as /metrics answers.
  std::string Render() const;
  static std::vector<std::string> FamilyNames();

  class Collector;

 private:
  WorkerMetrics();

  mutable absl::Mutex mu_;
  std::function<WorkerSnapshot()> source_ ABSL_GUARDED_BY(mu_);
  std::shared_ptr<Collector> collector_;
  std::unique_ptr<prometheus::Exposer> exposer_;
  int port_ = 0;
};

}  // namespace kvtier::worker

#endif  // KVTIER_WORKER_METRICS_WORKER_METRICS_H_
