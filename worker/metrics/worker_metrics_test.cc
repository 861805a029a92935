// WorkerMetrics renders exactly what its source reports, names only the
// families it lists, and refuses an address it cannot use.
#include "worker/metrics/worker_metrics.h"

#include <gtest/gtest.h>

#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_split.h"

namespace kvtier::worker {
namespace {

std::string ValueOf(const std::string& text, const std::string& line_start) {
  const std::vector<std::string> lines = absl::StrSplit(text, '\n');
  for (const std::string& line : lines) {
    if (line.starts_with(line_start + " ")) return line.substr(line_start.size() + 1);
  }
  return "absent";
}

TEST(WorkerMetricsTest, RendersTheSourcesFigures) {
  std::unique_ptr<WorkerMetrics> metrics = *WorkerMetrics::Start("");
  EXPECT_EQ(metrics->Render(), "");  // no source yet
  metrics->SetSource([] {
    return WorkerSnapshot{.pages_recalled = 12, .bytes_recalled = 49152, .recall_seconds = 0.25,
                          .decode_steps = 30, .pages_backed_up = 40, .pages_evicted = 20,
                          .pages_dropped = 1, .budget_pages = 16, .resident_pages = 15,
                          .prefix_pages_loaded = 64, .prefix_bytes_loaded = 262144,
                          .prefix_pages_rejected = 2, .prefix_loads = 3, .prefix_recomputes = 1};
  });
  const std::string text = metrics->Render();
  EXPECT_EQ(ValueOf(text, "kvtier_worker_pages_recalled_total"), "12");
  EXPECT_EQ(ValueOf(text, "kvtier_worker_recall_seconds_total"), "0.25");
  EXPECT_EQ(ValueOf(text, "kvtier_worker_decode_steps_total"), "30");
  EXPECT_EQ(ValueOf(text, "kvtier_worker_budget_pages"), "16");
  EXPECT_EQ(ValueOf(text, "kvtier_worker_resident_pages"), "15");
  EXPECT_EQ(ValueOf(text, "kvtier_worker_prefix_pages_loaded_total"), "64");
  EXPECT_EQ(ValueOf(text, "kvtier_worker_prefix_pages_rejected_total"), "2");
  EXPECT_EQ(ValueOf(text, "kvtier_worker_prefix_decisions_total{decision=\"load\"}"), "3");
  EXPECT_EQ(ValueOf(text, "kvtier_worker_prefix_decisions_total{decision=\"recompute\"}"), "1");
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

}  // namespace
}  // namespace kvtier::worker
