// Baseline policies that need no scores and keep no stored copies.
//
// FullCachePolicy: every page stays resident and is attended; the budget
// must cover the context (an append past it fails with RESOURCE_EXHAUSTED).
//
// WindowPolicy: the newest pages plus optional sink pages.
//   n_sink_pages = 0: sliding window (the survey's "novel attention" family).
//   n_sink_pages = 1: StreamingLLM on a paged runtime. [interp] The authors
//     keep 4 sink tokens and re-rotate keys by cache slot; with pre-rotated
//     keys and pages we keep sink page 0 (which holds the 4 sink tokens) plus
//     the newest budget - 1 pages, so the window is ceil(window / P) pages
//     when the budget is 1 + ceil(window / P). No re-rotation.
// When a new page opens at budget the oldest non-sink page is dropped.
#ifndef KVTIER_WORKER_POLICY_WINDOW_POLICY_H_
#define KVTIER_WORKER_POLICY_WINDOW_POLICY_H_

#include "worker/policy/policy.h"

namespace kvtier::worker {

class FullCachePolicy : public Policy {
 public:
  // The digests kept for every full page are of `digest_kind`, so a full
  // cache can also measure how well a digest ranks pages (digest_recall.h).
  explicit FullCachePolicy(
      kernels::DigestKind digest_kind = kernels::DigestKind::kArkvaleMean)
      : digest_kind_(digest_kind) {}
  std::string_view name() const override { return "full"; }
  kernels::DigestKind digest_kind() const override { return digest_kind_; }
  bool offloads() const override { return false; }
  bool NeedsScores(const LayerView&) const override { return false; }
  absl::StatusOr<PagePlan> Plan(const LayerView& view) override;
  int32_t AppendVictim(const LayerView&) override { return -1; }

 private:
  const kernels::DigestKind digest_kind_;
};

struct WindowOptions {
  // Pages at the start of the sequence that are never dropped: 0 for a
  // sliding window, 1 for StreamingLLM (its 4 sink tokens live in page 0).
  uint32_t n_sink_pages = 1;
};

class WindowPolicy : public Policy {
 public:
  explicit WindowPolicy(WindowOptions options) : options_(options) {}
  std::string_view name() const override {
    return options_.n_sink_pages == 0 ? "sliding_window" : "streaming_llm";
  }
  bool offloads() const override { return false; }
  bool NeedsScores(const LayerView&) const override { return false; }
  absl::StatusOr<PagePlan> Plan(const LayerView& view) override;
  int32_t AppendVictim(const LayerView& view) override;

 private:
  const WindowOptions options_;
};

}  // namespace kvtier::worker

#endif  // KVTIER_WORKER_POLICY_WINDOW_POLICY_H_
