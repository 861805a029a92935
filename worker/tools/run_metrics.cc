#include "worker/tools/run_metrics.h"

#include <utility>

#include "common/status_macros.h"

namespace kvtier::model {

absl::StatusOr<std::unique_ptr<RunMetrics>> RunMetrics::Start(const std::string& listen) {
  std::unique_ptr<RunMetrics> run(new RunMetrics());
  ASSIGN_OR_RETURN(run->metrics_, worker::WorkerMetrics::Start(listen));
  RunMetrics* self = run.get();
  run->metrics_->SetSource([self] {
    absl::MutexLock lock(&self->mu_);
    return self->last_;
  });
  return run;
}

void RunMetrics::Publish(const WorkerAttentionBackend* backend, const PrefixReuseReport& reuse) {
  worker::WorkerSnapshot s;
  if (backend != nullptr) {
    const worker::CacheCounters& cc = backend->counters();
    const worker::StepStats& st = backend->stats();
    s.pages_recalled = cc.pages_recalled;
    s.pages_recalled_foreign = cc.pages_recalled_foreign;
    s.bytes_recalled = cc.bytes_recalled;
    s.recall_seconds = st.times.recall_ns / 1e9;
    s.decode_steps = st.steps;
    s.pages_backed_up = cc.pages_backed_up;
    s.pages_evicted = cc.pages_evicted;
    s.pages_dropped = cc.pages_dropped;
    s.budget_pages = backend->pool_capacity_pages();
    s.resident_pages = backend->resident_pages();
  }
  s.prefix_pages_loaded = reuse.fetch.pages_loaded;
  s.prefix_bytes_loaded = reuse.fetch.bytes_loaded;
  s.prefix_pages_rejected = reuse.fetch.pages_rejected;
  s.prefix_loads = reuse.decided && reuse.decision.load && reuse.reused_tokens > 0 ? 1 : 0;
  s.prefix_recomputes = reuse.decided && s.prefix_loads == 0 ? 1 : 0;
  absl::MutexLock lock(&mu_);
  last_ = s;
}

}  // namespace kvtier::model
