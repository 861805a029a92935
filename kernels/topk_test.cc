#include "kernels/topk.h"

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace kvtier::kernels {
namespace {

// Reference: forced pages, then the rest sorted by (score desc, position
// asc, NaN last), first k overall, returned ascending.
std::vector<int32_t> Reference(const std::vector<float>& s, uint32_t k, uint32_t sink,
                               uint32_t recent) {
  const uint32_t n = static_cast<uint32_t>(s.size());
  std::vector<int32_t> out;
  if (n <= k) {
    for (uint32_t i = 0; i < n; ++i) out.push_back(static_cast<int32_t>(i));
    return out;
  }
  std::vector<int32_t> rest;
  for (uint32_t i = 0; i < n; ++i) {
    if (i < sink || i >= n - recent) {
      out.push_back(static_cast<int32_t>(i));
    } else {
      rest.push_back(static_cast<int32_t>(i));
    }
  }
  std::sort(rest.begin(), rest.end(), [&](int32_t a, int32_t b) {
    const bool na = std::isnan(s[a]), nb = std::isnan(s[b]);
    if (na != nb) return nb;
    if (!na && s[a] != s[b]) return s[a] > s[b];
    return a < b;
  });
  rest.resize(k - sink - recent);
  out.insert(out.end(), rest.begin(), rest.end());
  std::sort(out.begin(), out.end());
  return out;
}

TEST(TopKTest, KnownSelectionWithForcedPagesAndTies) {
  // 8 pages; sink 1, recent 2, k 5: page 0, pages 6-7 forced; best 2 of 1..5.
  std::vector<float> scores = {-9, 4, 7, 4, 7, 1, -9, -9};
  std::vector<int32_t> indptr = {0, 8};
  std::vector<int32_t> selected(5, 99), counts(1, 99);
  TopKArgs a;
  a.scores = scores.data();
  a.page_indptr = indptr.data();
  a.batch = 1;
  a.total_pages = 8;
  a.n_rows = 1;
  a.k = 5;
  a.sink = 1;
  a.recent = 2;
  a.selected = selected.data();
  a.counts = counts.data();
  ASSERT_TRUE(SelectTopKCpu(a, nullptr).ok());
  EXPECT_EQ(counts[0], 5);
  EXPECT_EQ(selected, (std::vector<int32_t>{0, 2, 4, 6, 7}));
  a.k = 6;  // the tie between 1 and 3 goes to the lower position
  selected.assign(6, 99);
  a.selected = selected.data();
  ASSERT_TRUE(SelectTopKCpu(a, nullptr).ok());
  EXPECT_EQ(selected, (std::vector<int32_t>{0, 1, 2, 4, 6, 7}));
  a.k = 20;  // k > n: everything, -1 tail
  selected.assign(20, 99);
  a.selected = selected.data();
  ASSERT_TRUE(SelectTopKCpu(a, nullptr).ok());
  EXPECT_EQ(counts[0], 8);
  for (int i = 0; i < 20; ++i) EXPECT_EQ(selected[i], i < 8 ? i : -1);
}

TEST(TopKTest, MatchesSortedReferenceOnRandomBatches) {
  std::mt19937 rng(17);
  ThreadPool pool(3);
  for (int rep = 0; rep < 60; ++rep) {
    const uint32_t batch = 1 + rng() % 4;
    const uint32_t rows = 1 + rng() % 4;
    const bool sum_rows = rng() % 2;
    const uint32_t k = 1 + rng() % 40;
    const uint32_t sink = rng() % (k + 1);
    const uint32_t recent = rng() % (k - sink + 1);
    const int value_range = rep % 3 == 0 ? 3 : 1000;  // many ties when small
    std::vector<int32_t> indptr = {0};
    for (uint32_t b = 0; b < batch; ++b) indptr.push_back(indptr.back() + rng() % 120);
    const uint32_t total = indptr.back();
    std::vector<float> scores(size_t{total} * rows);
    for (float& s : scores) {
      const int r = static_cast<int>(rng() % (value_range + 2));
      s = r == value_range ? NAN
                           : (r == value_range + 1 ? -INFINITY : static_cast<float>(r) * 0.25f);
    }
    TopKArgs a;
    a.scores = scores.data();
    a.page_indptr = indptr.data();
    a.batch = batch;
    a.total_pages = total;
    a.n_rows = rows;
    a.sum_rows = sum_rows;
    a.k = k;
    a.sink = sink;
    a.recent = recent;
    std::vector<int32_t> selected(size_t{batch} * a.out_rows() * k), counts(batch * a.out_rows());
    a.selected = selected.data();
    a.counts = counts.data();
    ASSERT_TRUE(SelectTopKCpu(a, &pool).ok());
    for (uint32_t b = 0; b < batch; ++b) {
      const uint32_t n = indptr[b + 1] - indptr[b];
      for (uint32_t r = 0; r < a.out_rows(); ++r) {
        std::vector<float> row(n, 0.0f);
        const float* block = scores.data() + static_cast<size_t>(indptr[b]) * rows;
        for (uint32_t i = 0; i < n; ++i) {
          if (sum_rows) {
            for (uint32_t h = 0; h < rows; ++h) row[i] += block[h * n + i];
          } else {
            row[i] = block[r * n + i];
          }
        }
        const std::vector<int32_t> want = Reference(row, k, sink, recent);
        const size_t item = size_t{b} * a.out_rows() + r;
        ASSERT_EQ(counts[item], static_cast<int32_t>(want.size()));
        std::vector<int32_t> got(selected.begin() + item * k, selected.begin() + item * k + k);
        for (size_t j = want.size(); j < k; ++j) ASSERT_EQ(got[j], -1);
        got.resize(want.size());
        ASSERT_EQ(got, want) << "rep " << rep << " b " << b << " r " << r;
      }
    }
  }
}

TEST(TopKTest, RejectsBadArguments) {
  std::vector<float> scores(4, 1.0f);
  std::vector<int32_t> indptr = {0, 4}, selected(2, 7), counts(1, 7);
  TopKArgs a;
  a.scores = scores.data();
  a.page_indptr = indptr.data();
  a.batch = 1;
  a.total_pages = 4;
  a.n_rows = 1;
  a.k = 2;
  a.sink = 2;
  a.recent = 1;  // sink + recent > k
  a.selected = selected.data();
  a.counts = counts.data();
  EXPECT_EQ(SelectTopKCpu(a, nullptr).code(), absl::StatusCode::kInvalidArgument);
  a.recent = 0;
  a.total_pages = 5;  // != indptr[batch]
  EXPECT_EQ(SelectTopKCpu(a, nullptr).code(), absl::StatusCode::kInvalidArgument);
  a.total_pages = 4;
  a.k = 0;
  EXPECT_EQ(SelectTopKCpu(a, nullptr).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(selected, (std::vector<int32_t>{7, 7}));
  EXPECT_EQ(counts[0], 7);
}

}  // namespace
}  // namespace kvtier::kernels
