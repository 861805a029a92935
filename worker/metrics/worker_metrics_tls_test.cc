// The worker's /metrics endpoint answers scrapes in a process that also
// loads OpenBLAS, as every worker program does. OpenBLAS's thread-local
// block is 60 KiB and glibc takes static TLS out of each thread's stack,
// while civetweb (the exposer's HTTP server, as Debian builds it) gives its
// threads stacks of 100 KiB. kvtier-run's static TLS (66 KiB: OpenBLAS, the
// CUDA runtime, ...) left the exposer's threads too little stack, and they
// overflowed on their first response; this test adds 24 KiB of its own so
// that, without metrics_endpoint's correction, it fails the same way.
#include <cblas.h>
#include <gtest/gtest.h>

#include <memory>
#include <string>

#include "testing/metrics_scrape.h"
#include "worker/metrics/worker_metrics.h"

namespace kvtier::worker {
namespace {

// Static TLS of the test itself (each thread's copy is zero-filled).
[[gnu::used]] thread_local char tls_ballast[24 << 10];

using ::kvtier::testing::MetricValue;
using ::kvtier::testing::ScrapeMetrics;

TEST(WorkerMetricsTlsTest, ScrapesAreAnsweredBesideOpenBlas) {
  // A BLAS call, so that the library is loaded and used as a worker uses it.
  const float x[4] = {1, 2, 3, 4};
  ASSERT_EQ(cblas_sdot(4, x, 1, x, 1), 30.0f);
  static_cast<volatile char*>(tls_ballast)[0] = 1;
  absl::StatusOr<std::unique_ptr<WorkerMetrics>> metrics = WorkerMetrics::Start("127.0.0.1:0");
  ASSERT_TRUE(metrics.ok()) << metrics.status();
  uint64_t recalled = 0;
  (*metrics)->SetSource([&recalled] { return WorkerSnapshot{.pages_recalled = ++recalled}; });
  for (int i = 1; i <= 5; ++i) {
    const std::string text = ScrapeMetrics((*metrics)->port());
    EXPECT_EQ(MetricValue(text, "kvtier_worker_pages_recalled_total"), std::to_string(i));
  }
}

}  // namespace
}  // namespace kvtier::worker
