// The model under the worker runtime: the full-cache policy reproduces
// llama2.c's output exactly, generous budgets equal the dense reference,
// small budgets really change what attention sees, and misuse is refused.
#include "worker/model/worker_attention_backend.h"

#include <fstream>
#include <numeric>
#include <sstream>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "worker/model/dense_attention_backend.h"
#include "worker/model/generate.h"
#include "worker/model/loader/model_loader.h"
#include "worker/model/transformer.h"
#include "worker/transfer/in_process_page_store.h"

namespace kvtier::model {
namespace {

using ::testing::HasSubstr;

const std::string kDir = KVTIER_STORIES260K_DIR;
constexpr char kPrompt[] =
    "Once upon a time, there was a little girl named Lily. She loved to play "
    "outside in the park.";

std::string ReadmeOracle() {
  std::ifstream in(kDir + "/README.md");
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string readme = ss.str();
  const size_t open = readme.find("```\n", readme.find("## Known output"));
  const size_t close = readme.find("\n```", open + 4);
  if (open == std::string::npos || close == std::string::npos) return "";
  return readme.substr(open + 4, close - open - 4);
}

class WorkerBackendTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto m = LoadModel(kDir + "/stories260K.bin", kDir + "/tok512.bin");
    ASSERT_TRUE(m.ok()) << m.status();
    model_ = *std::move(m);
  }

  // Greedy text of `steps` positions with `backend`.
  std::string Run(AttentionBackend& backend, const std::string& prompt,
                  int steps, int max_batch_tokens = 64) {
    auto t = Transformer::Create(&model_.weights, &backend,
                                 {.max_batch_tokens = max_batch_tokens});
    EXPECT_TRUE(t.ok()) << t.status();
    if (!t.ok()) return "";
    absl::StatusOr<Sampler> sampler = Sampler::Create(0.0f, 1);
    GenerationOptions options;
    options.steps = steps;
    options.stop_tokens = model_.stop_tokens;
    auto r = Generate(**t, backend, *model_.tokenizer, *sampler, prompt,
                      options);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? r->text : "";
  }

  std::unique_ptr<WorkerAttentionBackend> Worker(const std::string& policy,
                                                 int budget) {
    auto b = WorkerAttentionBackend::Create(
        model_.weights.config.attention_shape(),
        {.policy = policy, .budget_tokens = budget});
    EXPECT_TRUE(b.ok()) << b.status();
    return b.ok() ? *std::move(b) : nullptr;
  }

  // An ArkVale worker of 128 tokens over `store` and a transformer driving
  // it, sequence 1 started (null members after a failure already reported).
  struct StoreRun {
    std::unique_ptr<WorkerAttentionBackend> backend;
    std::unique_ptr<Transformer> transformer;
  };
  StoreRun OverStore(worker::PageStoreBackend* store) {
    StoreRun run;
    auto b = WorkerAttentionBackend::Create(
        model_.weights.config.attention_shape(),
        {.policy = "arkvale", .budget_tokens = 128, .store = store});
    EXPECT_TRUE(b.ok()) << b.status();
    if (!b.ok()) return run;
    auto t = Transformer::Create(&model_.weights, b->get(), {.max_batch_tokens = 64});
    EXPECT_TRUE(t.ok()) << t.status();
    if (!t.ok()) return run;
    EXPECT_TRUE((*b)->StartSequence(1).ok());
    run.backend = *std::move(b);
    run.transformer = *std::move(t);
    return run;
  }

  std::string Dense(const std::string& prompt, int steps) {
    auto b = DenseAttentionBackend::Create(
        model_.weights.config.attention_shape());
    return Run(**b, prompt, steps);
  }

  LoadedModel model_;
};

TEST_F(WorkerBackendTest, FullPolicyMatchesLlama2cOracle) {
  const std::string oracle = ReadmeOracle();
  ASSERT_GT(oracle.size(), 100u);
  auto b = Worker("full", 0);
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(Run(*b, "", 200), oracle);
  EXPECT_EQ(b->stats().steps, 200u * 5);  // every layer of every token
}

TEST_F(WorkerBackendTest, FullPolicyWithPromptMatchesDense) {
  auto b = Worker("full", 0);
  ASSERT_NE(b, nullptr);
  const std::string dense = Dense(kPrompt, 160);
  ASSERT_FALSE(dense.empty());
  EXPECT_EQ(Run(*b, kPrompt, 160), dense);
}

TEST_F(WorkerBackendTest, LongPromptInAnyBatchingMatchesDense) {
  // 3 x 32 tokens: batches of 64 leave a 32-token chunk, batches of 5 a
  // single token (which takes the decode path), batches of 1 run the whole
  // prompt as decode steps.
  const std::string prompt = std::string(kPrompt) + kPrompt + kPrompt;
  const std::string dense = Dense(prompt, 260);
  ASSERT_FALSE(dense.empty());
  for (int batch : {64, 5, 1}) {
    auto b = Worker("full", 0);
    ASSERT_NE(b, nullptr);
    EXPECT_EQ(Run(*b, prompt, 260, batch), dense) << "batch " << batch;
  }
}

TEST_F(WorkerBackendTest, BudgetCoveringTheContextChangesNothing) {
  const std::string dense = Dense(kPrompt, 160);
  for (const char* policy : {"sliding_window", "streaming_llm", "h2o"}) {
    auto b = Worker(policy, 512);
    ASSERT_NE(b, nullptr);
    EXPECT_EQ(Run(*b, kPrompt, 160), dense) << policy;
  }
}

TEST_F(WorkerBackendTest, SmallWindowChangesAttention) {
  auto b = Worker("sliding_window", 32);
  ASSERT_NE(b, nullptr);
  const std::string text = Run(*b, kPrompt, 200);
  EXPECT_FALSE(text.empty());
  EXPECT_NE(text, Dense(kPrompt, 200));
  EXPECT_GT(b->counters().pages_dropped, 0u);
  EXPECT_EQ(b->layer_budgets(), std::vector<uint32_t>(5, 2));
}

TEST_F(WorkerBackendTest, ArkvaleRecallsUnderTheModel) {
  auto b = Worker("arkvale", 128);
  ASSERT_NE(b, nullptr);
  EXPECT_FALSE(Run(*b, kPrompt, 300).empty());
  // Layers 0 and 1 keep the context; the rest hold 8 pages.
  EXPECT_EQ(b->layer_budgets(),
            (std::vector<uint32_t>{32, 32, 8, 8, 8}));
  EXPECT_GT(b->counters().pages_evicted, 0u);
  EXPECT_GT(b->counters().pages_recalled, 0u);
}

TEST_F(WorkerBackendTest, TokenPoliciesRunUnderBudget) {
  for (const char* policy :
       {"h2o", "h2o_per_head", "tova", "arkv", "arkv_last_query", "arkv_per_head", "quest",
        "quest_per_head", "quest_rerank", "quest_exact", "streaming_llm"}) {
    auto b = Worker(policy, 64);
    ASSERT_NE(b, nullptr);
    EXPECT_FALSE(Run(*b, kPrompt, 200).empty()) << policy;
  }
}

TEST_F(WorkerBackendTest, TheFirstTokenWaitsForNoHandOff) {
  // Transformer::Prefill returns the first token's logits with the prompt
  // still outside the cache; HandOffPrompt then places the budgeted pages
  // (selection, eviction), and a prompt batch after it is refused, as
  // after decoding.
  for (const char* policy : {"arkvale", "h2o", "arkv", "full"}) {
    auto b = Worker(policy, std::string(policy) == "full" ? 0 : 128);
    ASSERT_NE(b, nullptr);
    auto t = Transformer::Create(&model_.weights, b.get(), {.max_batch_tokens = 64});
    ASSERT_TRUE(t.ok());
    std::string text = kPrompt;
    for (int i = 0; i < 5; ++i) text = text + " " + kPrompt;
    auto ids = model_.tokenizer->Encode(text, true);
    ASSERT_TRUE(ids.ok());
    ASSERT_GT(ids->size(), 128u + 16u);
    ASSERT_TRUE(b->StartSequence(1).ok());
    auto prefilled = (*t)->Prefill(1, *ids, 0);
    ASSERT_TRUE(prefilled.ok()) << policy << ": " << prefilled.status();
    EXPECT_EQ(b->resident_pages(), 0u) << policy;
    ASSERT_TRUE(b->HandOffPrompt(1).ok()) << policy;
    const uint64_t prompt_pages = (ids->size() + 15) / 16;
    uint64_t want = 0;
    for (uint32_t budget : b->layer_budgets()) want += std::min<uint64_t>(budget, prompt_pages);
    EXPECT_EQ(b->resident_pages(), want) << policy;
    ASSERT_TRUE(b->HandOffPrompt(1).ok()) << policy;  // once is enough
    EXPECT_EQ(b->resident_pages(), want) << policy;
    EXPECT_FALSE((*t)->Prefill(1, *ids, static_cast<int>(ids->size())).ok()) << policy;
    ASSERT_TRUE(b->EndSequence(1).ok());
  }
}

TEST_F(WorkerBackendTest, EndingASequenceStoresTheCompletePromptItNeverHandedOff) {
  // A request that ends right after its first token still leaves its
  // prompt's full pages in the store, for every layer; one whose prefill
  // never completed leaves nothing.
  const AttentionShape shape = model_.weights.config.attention_shape();
  auto ids = model_.tokenizer->Encode(std::string(kPrompt) + " " + kPrompt + " " + kPrompt,
                                      true);
  ASSERT_TRUE(ids.ok());
  const uint32_t full_pages = static_cast<uint32_t>(ids->size() / 16);
  ASSERT_GE(full_pages, 2u);
  for (bool complete : {true, false}) {
    worker::InProcessPageStore store;
    StoreRun run = OverStore(&store);
    ASSERT_NE(run.transformer, nullptr);
    WorkerAttentionBackend* b = run.backend.get();
    Transformer* t = run.transformer.get();
    if (complete) {
      ASSERT_TRUE(t->Prefill(1, *ids, 0).ok());
    } else {
      // The prompt's rows are in, but no EndPrefill said it was complete.
      ASSERT_TRUE(b->AppendTokens(1, 0, *ids).ok());
      const size_t n = ids->size();
      std::vector<float> k(n * shape.kv_dim(), 0.5f), v(n * shape.kv_dim(), 0.25f);
      std::vector<float> q(n * shape.q_dim(), 0.1f), out(q.size());
      for (int layer = 0; layer < shape.n_layers; ++layer) {
        ASSERT_TRUE(
            b->AppendAndAttendBatch(1, layer, 0, static_cast<int>(n), k, v, q, absl::MakeSpan(out))
                .ok());
      }
    }
    EXPECT_EQ(store.page_count(), 0u) << complete;
    ASSERT_TRUE(b->EndSequence(1).ok()) << complete;
    auto stored = b->LookupPrefix(*ids, full_pages);
    ASSERT_TRUE(stored.ok()) << stored.status();
    EXPECT_EQ(*stored, complete ? full_pages : 0u);
    EXPECT_EQ(store.page_count(), complete ? size_t{full_pages} * shape.n_layers : 0u);
  }
}

TEST_F(WorkerBackendTest, PrefixCallsRefuseANegativeTokenId) {
  // A stored prompt, then the same prompt with one id negative: every
  // prefix call refuses it and nothing is loaded into the sequence.
  auto ids = model_.tokenizer->Encode(std::string(kPrompt) + " " + kPrompt, true);
  ASSERT_TRUE(ids.ok());
  const uint32_t full_pages = static_cast<uint32_t>(ids->size() / 16);
  ASSERT_GE(full_pages, 2u);
  worker::InProcessPageStore store;
  StoreRun run = OverStore(&store);
  ASSERT_NE(run.transformer, nullptr);
  WorkerAttentionBackend* b = run.backend.get();
  Transformer* t = run.transformer.get();
  ASSERT_TRUE(t->Prefill(1, *ids, 0).ok());
  ASSERT_TRUE(b->EndSequence(1).ok());
  auto stored = b->LookupPrefix(*ids, full_pages);
  ASSERT_TRUE(stored.ok()) << stored.status();
  ASSERT_EQ(*stored, full_pages);
  const size_t pages_before = store.page_count();

  std::vector<int> bad = *ids;
  bad[17] = -5;  // in the second page
  EXPECT_EQ(b->PrefixChain(bad).status().code(), absl::StatusCode::kInvalidArgument);
  auto looked_up = b->LookupPrefix(bad, full_pages);
  EXPECT_EQ(looked_up.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(looked_up.status().message(), HasSubstr("prompt token 17 has the negative id -5"));
  EXPECT_EQ(b->ProbePrefix(bad, 2).status().code(), absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(b->StartSequence(2).ok());
  EXPECT_EQ(b->LoadPrefix(2, bad, 2).code(), absl::StatusCode::kInvalidArgument);
  // The sequence is as it was started: the whole prompt still prefills.
  EXPECT_TRUE(t->Prefill(2, *ids, 0).ok());
  ASSERT_TRUE(b->EndSequence(2).ok());
  // A negative id beyond the pages probed or loaded is not read.
  EXPECT_TRUE(b->ProbePrefix(bad, 1).ok());
  EXPECT_EQ(store.page_count(), pages_before);
}

TEST_F(WorkerBackendTest, PerLayerBudgetsBoundEachLayer) {
  // stories260K: 5 layers, 512 positions (32 pages of 16).
  auto h2o = WorkerAttentionBackend::Create(
      model_.weights.config.attention_shape(),
      {.policy = "h2o", .layer_budget_tokens = {32, 64, 17, 48, 4096}});
  ASSERT_TRUE(h2o.ok()) << h2o.status();
  EXPECT_EQ((*h2o)->layer_budgets(), (std::vector<uint32_t>{2, 4, 2, 3, 32}));
  EXPECT_FALSE(Run(**h2o, kPrompt, 200).empty());
  // ArkVale's first two layers keep the context whatever the allocation.
  auto ark = WorkerAttentionBackend::Create(
      model_.weights.config.attention_shape(),
      {.policy = "arkvale", .layer_budget_tokens = {128, 128, 128, 256, 160}});
  ASSERT_TRUE(ark.ok()) << ark.status();
  EXPECT_EQ((*ark)->layer_budgets(), (std::vector<uint32_t>{32, 32, 8, 16, 10}));
  for (const char* policy : {"full", "quest", "quest_per_head", "quest_rerank", "quest_exact"}) {
    auto keeps_all = WorkerAttentionBackend::Create(
        model_.weights.config.attention_shape(),
        {.policy = policy, .layer_budget_tokens = {64, 64, 64, 64, 64}});
    EXPECT_EQ(keeps_all.status().code(), absl::StatusCode::kInvalidArgument) << policy;
    EXPECT_THAT(keeps_all.status().message(), HasSubstr("keeps every page")) << policy;
  }
  auto short_list = WorkerAttentionBackend::Create(
      model_.weights.config.attention_shape(),
      {.policy = "h2o", .layer_budget_tokens = {64, 64}});
  EXPECT_EQ(short_list.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(short_list.status().message(), HasSubstr("2 per-layer budgets for 5 layers"));
  auto zero = WorkerAttentionBackend::Create(
      model_.weights.config.attention_shape(),
      {.policy = "tova", .layer_budget_tokens = {64, 0, 64, 64, 64}});
  EXPECT_EQ(zero.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(zero.status().message(), HasSubstr("layer 1 budget of 0"));
}

TEST_F(WorkerBackendTest, AMemoryBudgetBudgetsEveryArkvaleLayer) {
  // stories260K: 5 layers of 32 context pages. 384 tokens a layer is 24
  // pages, 120 in all. Per layer, ArkVale's two dense layers keep the
  // context; under memory every layer holds its 24, or an allocator's.
  const AttentionShape shape = model_.weights.config.attention_shape();
  auto tokens = WorkerAttentionBackend::Create(shape, {.policy = "arkvale", .budget_tokens = 384});
  ASSERT_TRUE(tokens.ok()) << tokens.status();
  EXPECT_EQ((*tokens)->layer_budgets(), (std::vector<uint32_t>{32, 32, 24, 24, 24}));
  auto memory = WorkerAttentionBackend::Create(
      shape,
      {.policy = "arkvale", .budget_tokens = 384, .budget_unit = BudgetUnit::kResidentMemory});
  ASSERT_TRUE(memory.ok()) << memory.status();
  EXPECT_EQ((*memory)->layer_budgets(), (std::vector<uint32_t>{24, 24, 24, 24, 24}));
  auto allocated = WorkerAttentionBackend::Create(
      shape, {.policy = "arkvale",
              .budget_unit = BudgetUnit::kResidentMemory,
              .layer_budget_tokens = {384, 96, 256, 512, 384}});
  ASSERT_TRUE(allocated.ok()) << allocated.status();
  EXPECT_EQ((*allocated)->layer_budgets(), (std::vector<uint32_t>{24, 6, 16, 32, 24}));
  // Rounded up to pages these come to 103, over a memory budget of 20
  // pages a layer (100): the largest layer gives 3 back. Per layer they
  // stand.
  const std::vector<int> rounded_up = {384, 96, 264, 512, 384};
  auto capped = WorkerAttentionBackend::Create(
      shape, {.policy = "arkvale", .budget_tokens = 320,
              .budget_unit = BudgetUnit::kResidentMemory, .layer_budget_tokens = rounded_up});
  ASSERT_TRUE(capped.ok()) << capped.status();
  EXPECT_EQ((*capped)->layer_budgets(), (std::vector<uint32_t>{24, 6, 17, 29, 24}));
  auto h2o = WorkerAttentionBackend::Create(
      shape, {.policy = "h2o", .budget_tokens = 320, .layer_budget_tokens = rounded_up});
  ASSERT_TRUE(h2o.ok()) << h2o.status();
  EXPECT_EQ((*h2o)->layer_budgets(), (std::vector<uint32_t>{24, 6, 17, 32, 24}));
  // ArkVale's top-k (half a layer's budget) must cover its sink and window
  // pages (1 + 2): 64 tokens are 4 pages.
  auto small = WorkerAttentionBackend::Create(
      shape,
      {.policy = "arkvale", .budget_tokens = 64, .budget_unit = BudgetUnit::kResidentMemory});
  EXPECT_EQ(small.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(small.status().message(), HasSubstr("layer 0 gets 4 pages, below the 6"));
  auto one_small = WorkerAttentionBackend::Create(
      shape, {.policy = "arkvale",
              .budget_unit = BudgetUnit::kResidentMemory,
              .layer_budget_tokens = {384, 384, 80, 384, 384}});
  EXPECT_THAT(one_small.status().message(), HasSubstr("layer 2 gets 5 pages"));
  // A whole run (of more than 256 positions) stays within 16 pages in
  // every layer, the two first included.
  auto run = WorkerAttentionBackend::Create(
      shape,
      {.policy = "arkvale", .budget_tokens = 256, .budget_unit = BudgetUnit::kResidentMemory});
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_FALSE(Run(**run, std::string(kPrompt) + " " + kPrompt, 500).empty());
  EXPECT_GT((*run)->counters().pages_evicted, 0u);
  EXPECT_GT((*run)->counters().pages_recalled, 0u);
  for (uint64_t layer : (*run)->peak_resident_layer_bytes()) {
    EXPECT_EQ(layer, 16 * (*run)->page_bytes());
  }
}

TEST_F(WorkerBackendTest, AMemoryBudgetPagesQuestOutAndLeavesLayerPoliciesAsTheyAre) {
  const AttentionShape shape = model_.weights.config.attention_shape();
  // Quest keeps only the pages it attends, in every layer, and recalls.
  auto quest = WorkerAttentionBackend::Create(
      shape, {.policy = "quest", .budget_tokens = 64, .budget_unit = BudgetUnit::kResidentMemory});
  ASSERT_TRUE(quest.ok()) << quest.status();
  EXPECT_EQ((*quest)->layer_budgets(), (std::vector<uint32_t>{4, 4, 4, 4, 4}));
  EXPECT_FALSE(Run(**quest, std::string(kPrompt) + " " + kPrompt, 300).empty());
  EXPECT_GT((*quest)->counters().pages_recalled, 0u);
  EXPECT_EQ((*quest)->peak_resident_bytes(), 5 * 4 * (*quest)->page_bytes());
  // Under layer tokens it keeps every page and recalls nothing.
  auto resident = WorkerAttentionBackend::Create(shape, {.policy = "quest", .budget_tokens = 64});
  ASSERT_TRUE(resident.ok()) << resident.status();
  EXPECT_FALSE(Run(**resident, std::string(kPrompt) + " " + kPrompt, 300).empty());
  EXPECT_EQ((*resident)->counters().pages_recalled, 0u);
  EXPECT_GT((*resident)->peak_resident_bytes(), 5 * 8 * (*resident)->page_bytes());
  auto per_head = WorkerAttentionBackend::Create(
      shape, {.policy = "quest_per_head", .budget_tokens = 64,
              .budget_unit = BudgetUnit::kResidentMemory});
  EXPECT_EQ(per_head.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(per_head.status().message(), HasSubstr("per-KV-head lists cannot offload"));
  for (const char* policy : {"quest_rerank", "quest_exact"}) {
    auto reads_all = WorkerAttentionBackend::Create(
        shape, {.policy = policy, .budget_tokens = 64,
                .budget_unit = BudgetUnit::kResidentMemory});
    EXPECT_EQ(reads_all.status().code(), absl::StatusCode::kInvalidArgument) << policy;
    EXPECT_THAT(reads_all.status().message(), HasSubstr("keeps every page resident")) << policy;
  }
  EXPECT_TRUE(WorkerAttentionBackend::Create(
                  shape, {.policy = "full", .budget_unit = BudgetUnit::kResidentMemory})
                  .ok());
  for (const char* policy : {"h2o", "tova", "arkv", "streaming_llm"}) {
    auto b = WorkerAttentionBackend::Create(
        shape, {.policy = policy, .budget_tokens = 64,
                .budget_unit = BudgetUnit::kResidentMemory});
    ASSERT_TRUE(b.ok()) << policy << ": " << b.status();
    EXPECT_EQ((*b)->layer_budgets(), (std::vector<uint32_t>{4, 4, 4, 4, 4})) << policy;
  }
  EXPECT_EQ(*ParseBudgetUnit("memory"), BudgetUnit::kResidentMemory);
  EXPECT_EQ(*ParseBudgetUnit("layer_tokens"), BudgetUnit::kLayerTokens);
  EXPECT_STREQ(BudgetUnitName(BudgetUnit::kResidentMemory), "memory");
  EXPECT_THAT(ParseBudgetUnit("bytes").status().message(), HasSubstr("unknown budget unit"));
}

TEST_F(WorkerBackendTest, PeakResidentBytesAreWhatIsHeldAtOnce) {
  // Policies that hold nothing beside their pools keep every page they take
  // until the sequence ends, so the peak is each pool's high-water mark.
  for (const char* policy : {"arkvale", "h2o", "streaming_llm", "quest", "full"}) {
    auto b = Worker(policy, std::string(policy) == "full" ? 0 : 128);
    ASSERT_NE(b, nullptr);
    EXPECT_FALSE(Run(*b, kPrompt, 300).empty()) << policy;
    EXPECT_EQ(b->peak_resident_bytes(), b->peak_resident_pages() * b->page_bytes()) << policy;
    const std::vector<uint64_t>& layers = b->peak_resident_layer_bytes();
    EXPECT_EQ(std::accumulate(layers.begin(), layers.end(), uint64_t{0}),
              b->peak_resident_bytes())
        << policy;
  }
  // ARKV's quantized tier grows as its pool shrinks: the peak counts both
  // as they are at once. Under a memory budget the two tiers together stay
  // within the pool's pages (5 layers x 4).
  for (BudgetUnit unit : {BudgetUnit::kLayerTokens, BudgetUnit::kResidentMemory}) {
    auto arkv = WorkerAttentionBackend::Create(
        model_.weights.config.attention_shape(),
        {.policy = "arkv", .budget_tokens = 64, .budget_unit = unit});
    ASSERT_TRUE(arkv.ok()) << arkv.status();
    EXPECT_FALSE(Run(**arkv, std::string(kPrompt) + " " + kPrompt, 400).empty());
    const uint64_t pool_pages = 5 * 4 * (*arkv)->page_bytes();
    const std::vector<uint64_t>& layers = (*arkv)->peak_resident_layer_bytes();
    EXPECT_GE(std::accumulate(layers.begin(), layers.end(), uint64_t{0}),
              (*arkv)->peak_resident_bytes());
    if (unit == BudgetUnit::kResidentMemory) {
      EXPECT_LE((*arkv)->peak_resident_bytes(), pool_pages);
    }
  }
}

TEST_F(WorkerBackendTest, CreateRejectsBadConfigurations) {
  const AttentionShape shape = model_.weights.config.attention_shape();
  auto unknown = WorkerAttentionBackend::Create(shape, {.policy = "lru"});
  EXPECT_EQ(unknown.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(unknown.status().message(), HasSubstr("arkvale"));
  EXPECT_EQ(WorkerAttentionBackend::Create(
                shape, {.policy = "full", .budget_tokens = 256})
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(WorkerAttentionBackend::Create(shape, {.page_size = 0})
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(WorkerAttentionBackend::Create(shape, {.budget_tokens = -1})
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
  auto tpu = WorkerAttentionBackend::Create(shape, {.device = "tpu"});
  EXPECT_EQ(tpu.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(tpu.status().message(), HasSubstr("'tpu'"));
}

TEST_F(WorkerBackendTest, CallOrderIsChecked) {
  auto b = Worker("full", 0);
  ASSERT_NE(b, nullptr);
  const int kv = b->shape().kv_dim(), qd = b->shape().q_dim();
  std::vector<float> k(kv, 0.5f), v(kv, 1.0f), q(qd, 0.1f), out(qd);
  EXPECT_EQ(b->Append(9, 0, 0, k, v).code(), absl::StatusCode::kNotFound);
  ASSERT_TRUE(b->StartSequence(9).ok());
  EXPECT_EQ(b->StartSequence(9).code(), absl::StatusCode::kAlreadyExists);
  ASSERT_TRUE(b->AppendTokens(9, 0, std::vector<int>{1, 5}).ok());
  EXPECT_EQ(b->Attend(9, 0, q, absl::MakeSpan(out)).code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(b->Append(9, 0, 1, k, v).code(),
            absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(b->Append(9, 0, 0, k, v).ok());
  ASSERT_TRUE(b->Attend(9, 0, q, absl::MakeSpan(out)).ok());
  for (float x : out) EXPECT_FLOAT_EQ(x, 1.0f);  // one position: its value
  EXPECT_EQ(b->AppendAndAttendBatch(9, 0, 1, 1, k, v, q, absl::MakeSpan(out))
                .code(),
            absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(b->EndSequence(9).ok());
  EXPECT_EQ(b->EndSequence(9).code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace kvtier::model
