// PlanDecodeAttention: which items a launch gets, and that running them
// one by one (on the CPU reference) and merging gives the whole attention.
#include "kernels/decode_plan.h"

#include <cmath>
#include <cstring>
#include <numeric>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/testing/test_util.h"

namespace kvtier::kernels {
namespace {

// A batch of lists over a shuffled pool: tokens[b] per sequence, one list
// per KV head when per_head (lengths differing by head), else one.
struct Lists {
  uint32_t page_size = 16, n_kv_heads = 2, group = 2, head_dim = 8;
  bool per_head = false;
  std::vector<int32_t> indptr = {0}, indices, last_len;
  uint32_t pool_pages = 0;

  Lists(uint32_t ps, uint32_t hkv, uint32_t g, uint32_t dim, bool ph,
        const std::vector<uint32_t>& tokens)
      : page_size(ps), n_kv_heads(hkv), group(g), head_dim(dim), per_head(ph) {
    for (uint32_t t : tokens) {
      const uint32_t pages = (t + ps - 1) / ps;
      for (uint32_t l = 0; l < (ph ? hkv : 1); ++l) {
        // Per-head lists differ in length: head l drops l pages (not below one).
        const uint32_t n = pages == 0 ? 0 : std::max(1u, pages > l ? pages - l : 1u);
        for (uint32_t p = 0; p < n; ++p) indices.push_back(static_cast<int32_t>(pool_pages++));
        indptr.push_back(static_cast<int32_t>(indices.size()));
      }
      last_len.push_back(static_cast<int32_t>(t == 0 ? ps : t - (pages - 1) * ps));
    }
    std::mt19937 rng(tokens.size() + ps);
    std::shuffle(indices.begin(), indices.end(), rng);
  }

  DecodeAttentionArgs Args() const {
    DecodeAttentionArgs a;
    a.batch = static_cast<uint32_t>(last_len.size());
    a.n_q_heads = n_kv_heads * group;
    a.sm_scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
    a.queries = this;  // planning reads no pointer but indptr
    a.out = reinterpret_cast<float*>(1);
    a.lse = reinterpret_cast<float*>(1);
    a.kv.kv_type = ScalarType::kF32;
    a.kv.page_size = page_size;
    a.kv.n_kv_heads = n_kv_heads;
    a.kv.head_dim = head_dim;
    a.kv.page_stride_bytes = 2 * size_t{page_size} * n_kv_heads * head_dim * sizeof(float);
    a.kv.pool_pages = pool_pages;
    a.kv.pool = this;
    a.kv.per_head_lists = per_head;
    a.kv.indptr = indptr.data();
    a.kv.indices = indices.data();
    a.kv.last_page_len = last_len.data();
    a.kv.total_entries = static_cast<uint32_t>(indices.size());
    return a;
  }
};

DecodePlanOptions Options(uint32_t target, uint32_t min_tokens) {
  DecodePlanOptions o;
  o.target_ctas = target;
  o.min_chunk_tokens = min_tokens;
  return o;
}

// Every (sequence, KV head) is covered by consecutive items in order, split
// lists own consecutive partials and exactly one merge group.
void ExpectCovers(const Lists& lists, const DecodePlan& plan) {
  const DecodeAttentionArgs a = lists.Args();
  size_t item = 0, merge = 0;
  int32_t next_partial = 0;
  for (uint32_t b = 0; b < a.batch; ++b) {
    for (uint32_t g = 0; g < lists.n_kv_heads; ++g) {
      const size_t l = size_t{b} * a.kv.n_lists() + (lists.per_head ? g : 0);
      const int32_t begin = lists.indptr[l], end = lists.indptr[l + 1];
      int32_t at = begin, pieces = 0;
      const int32_t first_partial = next_partial;
      do {
        ASSERT_LT(item, plan.items.size());
        const DecodeWorkItem& w = plan.items[item++];
        EXPECT_EQ(w.seq, static_cast<int32_t>(b));
        EXPECT_EQ(w.kv_head, static_cast<int32_t>(g));
        EXPECT_EQ(w.begin, at);
        EXPECT_LE(w.end - w.begin, static_cast<int32_t>(plan.chunk_entries));
        EXPECT_EQ(w.list_end, end);
        if (w.partial >= 0) {
          EXPECT_EQ(w.partial, next_partial++);
        }
        at = w.end;
        ++pieces;
      } while (at < end);
      EXPECT_EQ(at, end);
      if (pieces == 1) {
        EXPECT_EQ(plan.items[item - 1].partial, -1);
        EXPECT_EQ(next_partial, first_partial);
      } else {
        ASSERT_LT(merge, plan.merges.size());
        const DecodeMergeGroup& m = plan.merges[merge++];
        EXPECT_EQ(m.seq, static_cast<int32_t>(b));
        EXPECT_EQ(m.kv_head, static_cast<int32_t>(g));
        EXPECT_EQ(m.first_partial, first_partial);
        EXPECT_EQ(m.n_partials, pieces);
      }
    }
  }
  EXPECT_EQ(item, plan.items.size());
  EXPECT_EQ(merge, plan.merges.size());
  EXPECT_EQ(static_cast<uint32_t>(next_partial), plan.n_partials);
}

TEST(DecodePlanTest, OneSequenceFillsTheTarget) {
  // Batch 1, 8 KV heads, 64 pages of 16 (1/8 of 8K): 8 lists would be 8 CTAs.
  const Lists lists(16, 8, 4, 128, false, {1024});
  const auto plan = PlanDecodeAttention(lists.Args(), Options(132, 128));
  ASSERT_TRUE(plan.ok()) << plan.status();
  // 512 entries read over 132 CTAs: chunks of 4 pages would be 64 tokens,
  // below the 128-token floor, so 8 pages, 8 items per head.
  EXPECT_EQ(plan->chunk_entries, 8u);
  EXPECT_EQ(plan->items.size(), 64u);
  EXPECT_EQ(plan->merges.size(), 8u);
  EXPECT_EQ(plan->n_partials, 64u);
  ExpectCovers(lists, *plan);

  const auto finer = PlanDecodeAttention(lists.Args(), Options(132, 16));
  ASSERT_TRUE(finer.ok());
  EXPECT_EQ(finer->chunk_entries, 4u);  // ceil(512 / 132)
  EXPECT_EQ(finer->items.size(), 128u);
  ExpectCovers(lists, *finer);
}

TEST(DecodePlanTest, EnoughListsAreNotCut) {
  const Lists lists(16, 8, 4, 128, false, std::vector<uint32_t>(16, 4096));
  const auto plan = PlanDecodeAttention(lists.Args(), Options(128, 128));
  ASSERT_TRUE(plan.ok());
  EXPECT_EQ(plan->items.size(), 128u);
  EXPECT_TRUE(plan->merges.empty());
  EXPECT_EQ(plan->n_partials, 0u);
  EXPECT_EQ(plan->WorkspaceBytes(4, 128), 0u);
  ExpectCovers(lists, *plan);
}

TEST(DecodePlanTest, UnevenAndEmptyListsStayWithinTheBound) {
  for (bool per_head : {false, true}) {
    for (uint32_t target : {1u, 7u, 64u, 1000u}) {
      const Lists lists(16, 3, 3, 64, per_head, {0, 1, 17, 5000, 16, 333, 0, 40000});
      const DecodePlanOptions options = Options(target, 32);
      const auto plan = PlanDecodeAttention(lists.Args(), options);
      ASSERT_TRUE(plan.ok()) << plan.status();
      ExpectCovers(lists, *plan);
      EXPECT_LE(plan->WorkspaceBytes(3, 64), DecodePlanMaxWorkspaceBytes(3, 64, options))
          << per_head << " " << target;
      // Empty lists still get one item, which writes zeros and -inf.
      EXPECT_GE(plan->items.size(), 8u * 3u);
    }
  }
}

TEST(DecodePlanTest, SerializesItemsThenMerges) {
  const Lists lists(16, 2, 1, 64, true, {900, 12});
  const auto plan = PlanDecodeAttention(lists.Args(), Options(16, 16));
  ASSERT_TRUE(plan.ok());
  ASSERT_FALSE(plan->merges.empty());
  std::vector<unsigned char> bytes(plan->DeviceBytes());
  ASSERT_EQ(bytes.size(), plan->items.size() * sizeof(DecodeWorkItem) +
                              plan->merges.size() * sizeof(DecodeMergeGroup));
  plan->Serialize(bytes.data());
  DecodeWorkItem last_item;
  std::memcpy(&last_item, bytes.data() + (plan->items.size() - 1) * sizeof(DecodeWorkItem),
              sizeof(last_item));
  EXPECT_EQ(last_item.end, plan->items.back().end);
  EXPECT_EQ(last_item.partial, plan->items.back().partial);
  DecodeMergeGroup first_merge;
  std::memcpy(&first_merge, bytes.data() + plan->items.size() * sizeof(DecodeWorkItem),
              sizeof(first_merge));
  EXPECT_EQ(first_merge.first_partial, plan->merges[0].first_partial);
  EXPECT_EQ(first_merge.n_partials, plan->merges[0].n_partials);
}

TEST(DecodePlanTest, RejectsBadIndptrAndOptions) {
  Lists lists(16, 2, 1, 64, false, {100, 200});
  DecodeAttentionArgs a = lists.Args();
  EXPECT_EQ(PlanDecodeAttention(a, Options(0, 16)).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(PlanDecodeAttention(a, Options(16, 0)).status().code(),
            absl::StatusCode::kInvalidArgument);
  std::vector<int32_t> bad = lists.indptr;
  bad[1] = bad[2] + 1;  // decreases
  a.kv.indptr = bad.data();
  EXPECT_EQ(PlanDecodeAttention(a, Options(16, 16)).status().code(),
            absl::StatusCode::kInvalidArgument);
  bad = lists.indptr;
  bad[0] = 1;
  EXPECT_EQ(PlanDecodeAttention(a, Options(16, 16)).status().code(),
            absl::StatusCode::kInvalidArgument);
  bad = lists.indptr;
  bad.back() -= 1;  // does not end at total_entries
  EXPECT_EQ(PlanDecodeAttention(a, Options(16, 16)).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// Runs every item as its own CPU call (a batch of one whose KV head g alone
// has the item's entries), merges the split lists, and compares with one
// call over everything.
void ExpectPlanEqualsWhole(const Lists& lists, const DecodePlanOptions& options) {
  const DecodeAttentionArgs whole = lists.Args();
  const uint32_t hq = whole.n_q_heads, dim = lists.head_dim, group = lists.group;
  const size_t page_elems = 2 * size_t{lists.page_size} * lists.n_kv_heads * dim;
  const std::vector<float> pool = testing::AdversarialFloats(
      std::max<size_t>(1, lists.pool_pages) * page_elems, 7, 6.0f);
  const std::vector<float> queries = testing::RandomFloats(size_t{whole.batch} * hq * dim, 8);
  ThreadPool threads(0);

  DecodeAttentionArgs ref = whole;
  ref.queries = queries.data();
  ref.query_type = ScalarType::kF32;
  ref.kv.pool = pool.data();
  std::vector<float> ref_out(size_t{whole.batch} * hq * dim), ref_lse(size_t{whole.batch} * hq);
  ref.out = ref_out.data();
  ref.lse = ref_lse.data();
  ASSERT_TRUE(DecodeAttentionCpu(ref, &threads).ok());

  const auto plan = PlanDecodeAttention(whole, options);
  ASSERT_TRUE(plan.ok()) << plan.status();
  std::vector<float> out(ref_out.size(), NAN), lse(ref_lse.size(), NAN);
  std::vector<float> part_out(size_t{plan->n_partials} * group * dim);
  std::vector<float> part_lse(size_t{plan->n_partials} * group);
  for (const DecodeWorkItem& w : plan->items) {
    std::vector<int32_t> indptr(lists.n_kv_heads + 1, 0);
    for (uint32_t g = 0; g < lists.n_kv_heads; ++g) {
      indptr[g + 1] = indptr[g] + (g == static_cast<uint32_t>(w.kv_head) ? w.end - w.begin : 0);
    }
    const int32_t last = w.end == w.list_end ? lists.last_len[w.seq] : lists.page_size;
    DecodeAttentionArgs one = ref;
    one.batch = 1;
    one.queries = queries.data() + size_t(w.seq) * hq * dim;
    one.kv.per_head_lists = true;
    one.kv.indptr = indptr.data();
    one.kv.indices = lists.indices.data() + w.begin;
    one.kv.total_entries = static_cast<uint32_t>(w.end - w.begin);
    one.kv.last_page_len = &last;
    std::vector<float> o(size_t{hq} * dim), l(hq);
    one.out = o.data();
    one.lse = l.data();
    ASSERT_TRUE(DecodeAttentionCpu(one, nullptr).ok());
    for (uint32_t j = 0; j < group; ++j) {
      const size_t row = size_t(w.kv_head) * group + j;
      float* dst_out = w.partial < 0 ? &out[(size_t(w.seq) * hq + row) * dim]
                                     : &part_out[(size_t(w.partial) * group + j) * dim];
      float* dst_lse = w.partial < 0 ? &lse[size_t(w.seq) * hq + row]
                                     : &part_lse[size_t(w.partial) * group + j];
      std::copy_n(&o[row * dim], dim, dst_out);
      *dst_lse = l[row];
    }
  }
  for (const DecodeMergeGroup& m : plan->merges) {
    for (uint32_t j = 0; j < group; ++j) {
      std::vector<float> so, sl;
      for (int32_t p = 0; p < m.n_partials; ++p) {
        const size_t state = size_t(m.first_partial + p) * group + j;
        so.insert(so.end(), &part_out[state * dim], &part_out[state * dim] + dim);
        sl.push_back(part_lse[state]);
      }
      const size_t row = size_t(m.seq) * hq + size_t(m.kv_head) * group + j;
      MergeStatesArgs merge;
      merge.states_out = so.data();
      merge.states_lse = sl.data();
      merge.n_rows = 1;
      merge.n_states = static_cast<uint32_t>(m.n_partials);
      merge.head_dim = dim;
      merge.out = &out[row * dim];
      merge.lse = &lse[row];
      ASSERT_TRUE(MergeAttentionStatesCpu(merge, nullptr).ok());
    }
  }
  for (size_t i = 0; i < out.size(); ++i) ASSERT_NEAR(out[i], ref_out[i], 2e-5f * 6.0f) << i;
  for (size_t i = 0; i < lse.size(); ++i) {
    if (std::isinf(ref_lse[i])) {
      ASSERT_EQ(lse[i], ref_lse[i]) << i;
    } else {
      ASSERT_NEAR(lse[i], ref_lse[i], 2e-5f + 1e-6f * std::abs(ref_lse[i])) << i;
    }
  }
}

TEST(DecodePlanTest, RunningTheItemsAndMergingEqualsTheWhole) {
  for (bool per_head : {false, true}) {
    for (uint32_t target : {1u, 5u, 40u, 500u}) {
      ExpectPlanEqualsWhole(Lists(16, 2, 3, 32, per_head, {0, 1, 999, 16, 2048}),
                            Options(target, 16));
      ExpectPlanEqualsWhole(Lists(1, 3, 1, 16, per_head, {7, 300}), Options(target, 1));
    }
  }
}

}  // namespace
}  // namespace kvtier::kernels
