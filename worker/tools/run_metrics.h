// kvtier-run's /metrics (worker/metrics/worker_metrics.h): the generating
// thread publishes a snapshot of its worker backend and prefix reuse after
// each token, and scrapes read the last one, so the exposer's threads never
// touch the backend.
#ifndef KVTIER_WORKER_TOOLS_RUN_METRICS_H_
#define KVTIER_WORKER_TOOLS_RUN_METRICS_H_

#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "worker/metrics/worker_metrics.h"
#include "worker/model/prefix_reuse.h"
#include "worker/model/worker_attention_backend.h"

namespace kvtier::model {

class RunMetrics {
 public:
  // Serves on `listen` (host:port, port 0 picks one).
  static absl::StatusOr<std::unique_ptr<RunMetrics>> Start(const std::string& listen);

  int port() const { return metrics_->port(); }
  // From the generating thread. `backend` may be null (the dense policy).
  void Publish(const WorkerAttentionBackend* backend, const PrefixReuseReport& reuse)
      ABSL_LOCKS_EXCLUDED(mu_);

 private:
  RunMetrics() = default;

  absl::Mutex mu_;
  worker::WorkerSnapshot last_ ABSL_GUARDED_BY(mu_);
  std::unique_ptr<worker::WorkerMetrics> metrics_;
};

}  // namespace kvtier::model

#endif  // KVTIER_WORKER_TOOLS_RUN_METRICS_H_
