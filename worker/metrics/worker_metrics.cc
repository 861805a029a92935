#include "worker/metrics/worker_metrics.h"

#include <utility>

#include "common/metrics_endpoint.h"
#include "common/status_macros.h"
#include "prometheus/collectable.h"
#include "prometheus/exposer.h"
#include "prometheus/text_serializer.h"

namespace kvtier::worker {
namespace {

using prometheus::ClientMetric;
using prometheus::MetricFamily;
using prometheus::MetricType;

MetricFamily Family(const char* name, const char* help, MetricType type, double value,
                    std::vector<ClientMetric::Label> labels = {}) {
  MetricFamily f;
  f.name = name;
  f.help = help;
  f.type = type;
  ClientMetric m;
  m.label = std::move(labels);
  m.counter.value = value;
  m.gauge.value = value;
  f.metric.push_back(std::move(m));
  return f;
}

}  // namespace

class WorkerMetrics::Collector final : public prometheus::Collectable {
 public:
  explicit Collector(const WorkerMetrics* owner) : owner_(owner) {}

  std::vector<MetricFamily> Collect() const override {
    std::function<WorkerSnapshot()> source;
    {
      absl::MutexLock lock(&owner_->mu_);
      source = owner_->source_;
    }
    if (!source) return {};
    const WorkerSnapshot s = source();
    const auto C = MetricType::Counter;
    const auto G = MetricType::Gauge;
    std::vector<MetricFamily> out = {
        Family("kvtier_worker_pages_recalled_total", "Pages recalled from the store", C,
               static_cast<double>(s.pages_recalled)),
        Family("kvtier_worker_pages_recalled_foreign_total",
               "Recalled pages whose stored bytes another writer put first", C,
               static_cast<double>(s.pages_recalled_foreign)),
        Family("kvtier_worker_recalled_bytes_total", "Bytes recalled from the store", C,
               static_cast<double>(s.bytes_recalled)),
        Family("kvtier_worker_recall_seconds_total", "Time decode steps spent recalling pages", C,
               s.recall_seconds),
        Family("kvtier_worker_decode_steps_total", "Layer decode steps", C,
               static_cast<double>(s.decode_steps)),
        Family("kvtier_worker_pages_backed_up_total", "Pages written to the store", C,
               static_cast<double>(s.pages_backed_up)),
        Family("kvtier_worker_pages_evicted_total", "Pages that left the pool with a stored copy",
               C, static_cast<double>(s.pages_evicted)),
        Family("kvtier_worker_pages_dropped_total", "Pages that left the pool for good", C,
               static_cast<double>(s.pages_dropped)),
        Family("kvtier_worker_budget_pages", "Pages the device pool may hold", G,
               static_cast<double>(s.budget_pages)),
        Family("kvtier_worker_resident_pages", "Pages the device pool holds", G,
               static_cast<double>(s.resident_pages)),
        Family("kvtier_worker_prefix_pages_loaded_total",
               "Prefix pages loaded from the store instead of computed", C,
               static_cast<double>(s.prefix_pages_loaded)),
        Family("kvtier_worker_prefix_loaded_bytes_total", "Bytes of the prefix pages loaded", C,
               static_cast<double>(s.prefix_bytes_loaded)),
        Family("kvtier_worker_prefix_pages_rejected_total",
               "Prefix pages refused on load (key, layout, size or checksum)", C,
               static_cast<double>(s.prefix_pages_rejected)),
    };
    MetricFamily decisions = Family("kvtier_worker_prefix_decisions_total",
                                    "Requests by the load-or-recompute decision", C,
                                    static_cast<double>(s.prefix_loads), {{"decision", "load"}});
    ClientMetric recompute;
    recompute.label = {{"decision", "recompute"}};
    recompute.counter.value = static_cast<double>(s.prefix_recomputes);
    decisions.metric.push_back(std::move(recompute));
    out.push_back(std::move(decisions));
    return out;
  }

 private:
  const WorkerMetrics* const owner_;
};

WorkerMetrics::WorkerMetrics() : collector_(std::make_shared<Collector>(this)) {}
WorkerMetrics::~WorkerMetrics() = default;

absl::StatusOr<std::unique_ptr<WorkerMetrics>> WorkerMetrics::Start(const std::string& listen) {
  std::unique_ptr<WorkerMetrics> metrics(new WorkerMetrics());
  if (listen.empty()) return metrics;
  ASSIGN_OR_RETURN(MetricsEndpoint endpoint, StartMetricsEndpoint(listen));
  metrics->exposer_ = std::move(endpoint.exposer);
  metrics->port_ = endpoint.port;
  metrics->exposer_->RegisterCollectable(metrics->collector_);
  return metrics;
}

void WorkerMetrics::SetSource(std::function<WorkerSnapshot()> source) {
  absl::MutexLock lock(&mu_);
  source_ = std::move(source);
}

std::string WorkerMetrics::Render() const {
  return prometheus::TextSerializer().Serialize(collector_->Collect());
}

std::vector<std::string> WorkerMetrics::FamilyNames() {
  return {"kvtier_worker_pages_recalled_total",
          "kvtier_worker_pages_recalled_foreign_total",
          "kvtier_worker_recalled_bytes_total",
          "kvtier_worker_recall_seconds_total",
          "kvtier_worker_decode_steps_total",
          "kvtier_worker_pages_backed_up_total",
          "kvtier_worker_pages_evicted_total",
          "kvtier_worker_pages_dropped_total",
          "kvtier_worker_budget_pages",
          "kvtier_worker_resident_pages",
          "kvtier_worker_prefix_pages_loaded_total",
          "kvtier_worker_prefix_loaded_bytes_total",
          "kvtier_worker_prefix_pages_rejected_total",
          "kvtier_worker_prefix_decisions_total"};
}

}  // namespace kvtier::worker
