#include "worker/model/dense_attention_backend.h"

#include <cmath>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kvtier::model {
namespace {

using ::testing::ElementsAre;
using ::testing::FloatNear;

AttentionShape Shape(int heads, int kv_heads, int head_dim, int max_pos = 8) {
  return AttentionShape{.n_layers = 2,
                        .n_heads = heads,
                        .n_kv_heads = kv_heads,
                        .head_dim = head_dim,
                        .max_positions = max_pos};
}

TEST(DenseAttentionTest, SinglePositionReturnsItsValue) {
  auto b = DenseAttentionBackend::Create(Shape(1, 1, 2));
  ASSERT_TRUE(b.ok());
  ASSERT_TRUE((*b)->StartSequence(7).ok());
  const std::vector<float> k = {1, 0}, v = {3, -4}, q = {5, 5};
  ASSERT_TRUE((*b)->Append(7, 0, 0, k, v).ok());
  std::vector<float> out(2);
  ASSERT_TRUE((*b)->Attend(7, 0, q, absl::MakeSpan(out)).ok());
  EXPECT_THAT(out, ElementsAre(3.0f, -4.0f));
}

TEST(DenseAttentionTest, SoftmaxWeightsWithScale) {
  // head_dim 4: scale 1/2. Scores q.k/2 = {0, ln 3} -> weights {1/4, 3/4}.
  auto b = DenseAttentionBackend::Create(Shape(1, 1, 4));
  ASSERT_TRUE(b.ok());
  ASSERT_TRUE((*b)->StartSequence(1).ok());
  const float s = 2.0f * std::log(3.0f);
  ASSERT_TRUE((*b)->Append(1, 1, 0, {0, 0, 0, 0}, {4, 0, 0, 8}).ok());
  ASSERT_TRUE((*b)->Append(1, 1, 1, {s, 0, 0, 0}, {0, 4, 0, 0}).ok());
  std::vector<float> out(4);
  ASSERT_TRUE((*b)->Attend(1, 1, {1, 0, 0, 0}, absl::MakeSpan(out)).ok());
  EXPECT_THAT(out, ElementsAre(FloatNear(1.0f, 1e-6), FloatNear(3.0f, 1e-6),
                               FloatNear(0.0f, 1e-6), FloatNear(2.0f, 1e-6)));
  EXPECT_EQ(*(*b)->Length(1, 1), 2);
  EXPECT_EQ(*(*b)->Length(1, 0), 0);
}

TEST(DenseAttentionTest, GroupedQueryHeadsShareKvHeads) {
  // 4 query heads over 2 KV heads: heads 0,1 read KV head 0; 2,3 head 1.
  auto b = DenseAttentionBackend::Create(Shape(4, 2, 1));
  ASSERT_TRUE(b.ok());
  ASSERT_TRUE((*b)->StartSequence(0).ok());
  ASSERT_TRUE((*b)->Append(0, 0, 0, {0, 0}, {10, 20}).ok());
  std::vector<float> out(4);
  ASSERT_TRUE((*b)->Attend(0, 0, {1, 2, 3, 4}, absl::MakeSpan(out)).ok());
  EXPECT_THAT(out, ElementsAre(10, 10, 20, 20));
}

TEST(DenseAttentionTest, BatchEqualsTokenByToken) {
  const AttentionShape shape = Shape(2, 1, 2);
  auto a = DenseAttentionBackend::Create(shape);
  auto b = DenseAttentionBackend::Create(shape);
  ASSERT_TRUE(a.ok() && b.ok());
  ASSERT_TRUE((*a)->StartSequence(0).ok());
  ASSERT_TRUE((*b)->StartSequence(0).ok());
  const std::vector<float> k = {1, 2, -1, 0.5f, 0, 3};
  const std::vector<float> v = {1, 1, 2, -2, 0, 5};
  const std::vector<float> q = {1, 0, 0, 1, 1, 1, -1, 2, 0.5f, 0.5f, 3, 1};
  std::vector<float> batch(12), single(12);
  ASSERT_TRUE((*a)->AppendAndAttendBatch(0, 0, 0, 3, k, v, q,
                                         absl::MakeSpan(batch)).ok());
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE((*b)->Append(0, 0, i, absl::MakeSpan(k).subspan(2 * i, 2),
                             absl::MakeSpan(v).subspan(2 * i, 2)).ok());
    ASSERT_TRUE((*b)->Attend(0, 0, absl::MakeSpan(q).subspan(4 * i, 4),
                             absl::MakeSpan(single).subspan(4 * i, 4)).ok());
  }
  // BLAS sums in another order: equal up to rounding.
  for (size_t i = 0; i < batch.size(); ++i) {
    EXPECT_NEAR(batch[i], single[i], 1e-6f) << i;
  }
  // The first query saw only position 0.
  EXPECT_THAT(absl::MakeSpan(batch).subspan(0, 4), ElementsAre(1, 1, 1, 1));
  EXPECT_EQ(*(*a)->Length(0, 0), 3);
}

// Long rows, several KV heads and groups of query heads, a batch that
// starts mid-block: the batched kernel (grouped BLAS, vector exp, partial
// sums) against DenseAttention's plain loops, query by query.
TEST(DenseAttentionTest, LongBatchesMatchThePlainLoopsForEveryHead) {
  const AttentionShape shape = Shape(/*heads=*/6, /*kv_heads=*/2, /*head_dim=*/8, 160);
  const int past = 37, n = 83, total = past + n;
  std::vector<float> k(total * shape.kv_dim()), v(k.size()), q(n * shape.q_dim());
  uint32_t x = 12345;
  auto next = [&x] {
    x = x * 1664525u + 1013904223u;
    return static_cast<float>(x >> 8) / (1 << 24) * 4.0f - 2.0f;
  };
  for (float& f : k) f = next();
  for (float& f : v) f = next();
  for (float& f : q) f = next();
  std::vector<float> batch(q.size());
  DenseCausalAttention(shape, q.data(), n, k.data(), v.data(), past, batch.data());
  std::vector<float> scores(total), single(shape.q_dim());
  for (int i = 0; i < n; ++i) {
    DenseAttention(shape, q.data() + i * shape.q_dim(), k.data(), v.data(), past + i + 1,
                   scores.data(), single.data());
    for (int e = 0; e < shape.q_dim(); ++e) {
      ASSERT_NEAR(batch[i * shape.q_dim() + e], single[e], 2e-5f) << "query " << i << " " << e;
    }
  }
  // Again with the threads' scratch as the first call left it: the same bits.
  std::vector<float> again(q.size());
  DenseCausalAttention(shape, q.data(), n, k.data(), v.data(), past, again.data());
  EXPECT_EQ(again, batch);
  // Split where a prompt's batches may split, at block boundaries and
  // inside a block: each row the same bits as in one call.
  for (int split : {11, 16 - past % 16, 43}) {
    std::vector<float> parts(q.size());
    DenseCausalAttention(shape, q.data(), split, k.data(), v.data(), past, parts.data());
    DenseCausalAttention(shape, q.data() + split * shape.q_dim(), n - split, k.data(), v.data(),
                         past + split, parts.data() + split * shape.q_dim());
    EXPECT_EQ(parts, batch) << "split at " << split;
  }
  // And from several threads at once.
  std::vector<std::vector<float>> outs(3, std::vector<float>(q.size()));
  std::vector<std::thread> callers;
  for (auto& o : outs) {
    callers.emplace_back([&, out = o.data()] {
      DenseCausalAttention(shape, q.data(), n, k.data(), v.data(), past, out);
    });
  }
  for (std::thread& t : callers) t.join();
  for (const auto& o : outs) EXPECT_EQ(o, batch);
}

TEST(DenseAttentionTest, BatchChecksPositionsAndCapacity) {
  auto b = DenseAttentionBackend::Create(Shape(1, 1, 1, /*max_pos=*/3));
  ASSERT_TRUE(b.ok());
  ASSERT_TRUE((*b)->StartSequence(0).ok());
  std::vector<float> out(2);
  EXPECT_EQ((*b)->AppendAndAttendBatch(0, 0, 1, 2, {1, 2}, {1, 2}, {1, 1},
                                       absl::MakeSpan(out))
                .code(),
            absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE((*b)->AppendAndAttendBatch(0, 0, 0, 2, {1, 2}, {1, 2}, {1, 1},
                                         absl::MakeSpan(out))
                  .ok());
  EXPECT_EQ((*b)->AppendAndAttendBatch(0, 0, 2, 2, {1, 2}, {1, 2}, {1, 1},
                                       absl::MakeSpan(out))
                .code(),
            absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(*(*b)->Length(0, 0), 2);
}

TEST(DenseAttentionTest, Errors) {
  EXPECT_EQ(DenseAttentionBackend::Create(Shape(3, 2, 4)).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(DenseAttentionBackend::Create(Shape(2, 1, 4), {.max_sequences = 0})
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
  auto b = DenseAttentionBackend::Create(Shape(1, 1, 1, /*max_pos=*/2),
                                         {.max_sequences = 1});
  ASSERT_TRUE(b.ok());
  std::vector<float> out(1);
  EXPECT_EQ((*b)->Append(5, 0, 0, {1}, {1}).code(),
            absl::StatusCode::kNotFound);
  ASSERT_TRUE((*b)->StartSequence(5).ok());
  EXPECT_EQ((*b)->StartSequence(5).code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ((*b)->StartSequence(6).code(),
            absl::StatusCode::kResourceExhausted);
  EXPECT_EQ((*b)->Attend(5, 0, {1}, absl::MakeSpan(out)).code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ((*b)->Append(5, 0, 1, {1}, {1}).code(),
            absl::StatusCode::kInvalidArgument);  // position 0 comes first
  EXPECT_EQ((*b)->Append(5, 2, 0, {1}, {1}).code(),
            absl::StatusCode::kInvalidArgument);  // no layer 2
  EXPECT_EQ((*b)->Append(5, 0, 0, {1, 2}, {1}).code(),
            absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE((*b)->Append(5, 0, 0, {1}, {1}).ok());
  ASSERT_TRUE((*b)->Append(5, 0, 1, {1}, {1}).ok());
  EXPECT_EQ((*b)->Append(5, 0, 2, {1}, {1}).code(),
            absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(*(*b)->Length(5, 0), 2);  // the failed append changed nothing
  ASSERT_TRUE((*b)->EndSequence(5).ok());
  EXPECT_EQ((*b)->EndSequence(5).code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE((*b)->StartSequence(6).ok());
}

}  // namespace
}  // namespace kvtier::model
