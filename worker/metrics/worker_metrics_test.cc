// WorkerMetrics renders exactly what its source reports, names only the
// families it lists, and refuses an address it cannot use.
#include "worker/metrics/worker_metrics.h"

#include <gtest/gtest.h>

#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_split.h"
#include "testing/metrics_scrape.h"

namespace kvtier::worker {
namespace {

using ::kvtier::testing::MetricValue;

TEST(WorkerMetricsTest, RendersTheSourcesFigures) {
  std::unique_ptr<WorkerMetrics> metrics = *WorkerMetrics::Start("");
  EXPECT_EQ(metrics->Render(), "");  // no source yet
  metrics->SetSource([] {
    return WorkerSnapshot{.pages_recalled = 12, .pages_recalled_foreign = 5,
                          .bytes_recalled = 49152, .recall_seconds = 0.25,
                          .decode_steps = 30, .pages_backed_up = 40, .pages_evicted = 20,
                          .pages_dropped = 1, .budget_pages = 16, .resident_pages = 15,
                          .prefix_pages_loaded = 64, .prefix_bytes_loaded = 262144,
                          .prefix_pages_rejected = 2, .prefix_loads = 3, .prefix_recomputes = 1};
  });
  const std::string text = metrics->Render();
  EXPECT_EQ(MetricValue(text, "kvtier_worker_pages_recalled_total"), "12");
  EXPECT_EQ(MetricValue(text, "kvtier_worker_pages_recalled_foreign_total"), "5");
  EXPECT_EQ(MetricValue(text, "kvtier_worker_recall_seconds_total"), "0.25");
  EXPECT_EQ(MetricValue(text, "kvtier_worker_decode_steps_total"), "30");
  EXPECT_EQ(MetricValue(text, "kvtier_worker_budget_pages"), "16");
  EXPECT_EQ(MetricValue(text, "kvtier_worker_resident_pages"), "15");
  EXPECT_EQ(MetricValue(text, "kvtier_worker_prefix_pages_loaded_total"), "64");
  EXPECT_EQ(MetricValue(text, "kvtier_worker_prefix_pages_rejected_total"), "2");
  EXPECT_EQ(MetricValue(text, "kvtier_worker_prefix_decisions_total{decision=\"load\"}"), "3");
  EXPECT_EQ(MetricValue(text, "kvtier_worker_prefix_decisions_total{decision=\"recompute\"}"), "1");
  const std::vector<std::string> names = WorkerMetrics::FamilyNames();
  const std::set<std::string> known(names.begin(), names.end());
  size_t families = 0;
  const std::vector<std::string> lines = absl::StrSplit(text, '\n');
  for (const std::string& line : lines) {
    if (!line.starts_with("# TYPE ")) continue;
    ++families;
    const std::vector<std::string> parts = absl::StrSplit(line, ' ');
    EXPECT_TRUE(known.contains(parts[2])) << parts[2];
  }
  EXPECT_EQ(families, known.size());
}

TEST(WorkerMetricsTest, BadAddressesAreRefused) {
  EXPECT_EQ(WorkerMetrics::Start("9465").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(WorkerMetrics::Start("1.2.3.999:0").status().code(),
            absl::StatusCode::kInvalidArgument);
  absl::StatusOr<std::unique_ptr<WorkerMetrics>> bound = WorkerMetrics::Start("127.0.0.1:0");
  ASSERT_TRUE(bound.ok()) << bound.status();
  EXPECT_GT((*bound)->port(), 0);
}

// The endpoint answers GET /metrics with the source's figures.
TEST(WorkerMetricsTest, TheEndpointServesTheFigures) {
  std::unique_ptr<WorkerMetrics> metrics = *WorkerMetrics::Start("127.0.0.1:0");
  metrics->SetSource([] { return WorkerSnapshot{.decode_steps = 7}; });
  const std::string reply = ::kvtier::testing::ScrapeMetrics(metrics->port());
  EXPECT_TRUE(reply.starts_with("HTTP/1.1 200")) << reply.substr(0, 200);
  EXPECT_NE(reply.find("\nkvtier_worker_decode_steps_total 7\n"), std::string::npos) << reply;
}

}  // namespace
}  // namespace kvtier::worker
