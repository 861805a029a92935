// kvtier-run: generates text with a Llama-family model, every attention
// going through an AttentionBackend chosen by --policy.
//
//   kvtier-run --model PATH [--tokenizer PATH] [--prompt TEXT] [--steps N]
//              [--temperature T] [--seed S] [--policy NAME] [--budget N]
//              [--budget-unit U] [--page-size P] [--digest-type T] [--device D]
//              [--target ADDR]
//              [--cluster BOOL] [--reuse BOOL]
//              [--metrics-listen HOST:PORT] [--metrics-hold-s S]
//
// --policy dense uses the runner's own exact full-cache attention (the
// reference); every other name runs the worker runtime's policy of that
// name (worker_attention_backend.h). With --target the worker backs its
// pages up to the kvtier-server at ADDR and admits the prompt with prefix
// reuse (prefix_reuse.h): a prefix some earlier run stored is loaded
// instead of recomputed when the estimate says loading is faster. With
// --metrics-listen it serves the worker's Prometheus metrics while it runs
// (and --metrics-hold-s seconds after, for a last scrape).
//
// stdout carries only the generated text (and a final newline, as llama2.c
// prints); load and speed figures go to stderr.
//
// Exit status: 0 done, 1 a load or run error, 2 a usage error.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "worker/model/dense_attention_backend.h"
#include "worker/model/generate.h"
#include "worker/model/loader/model_loader.h"
#include "worker/model/blas_kernels.h"
#include "worker/model/prefix_reuse.h"
#include "worker/model/sampler.h"
#include "worker/model/transformer.h"
#include "worker/model/worker_attention_backend.h"
#include "worker/tools/run_metrics.h"
#include "worker/transfer/client_page_store.h"
#include "worker/transfer/cluster_page_store.h"

namespace kvtier::model {
namespace {

constexpr char kUsage[] =
    "usage: kvtier-run --model PATH [--tokenizer PATH] [--prompt TEXT]\n"
    "                  [--steps N] [--temperature T] [--seed S]\n"
    "                  [--policy NAME] [--budget N] [--budget-unit U]\n"
    "                  [--page-size P] [--digest-type T] [--device D]\n"
    "  --model        llama2.c checkpoint or GGUF file\n"
    "  --tokenizer    llama2.c tokenizer file (GGUF carries its own)\n"
    "  --prompt       text to continue (default: empty, BOS only)\n"
    "  --steps        positions to run, prompt included (default 256,\n"
    "                 at most the model's context); as in llama2.c the last\n"
    "                 prompt position yields the first new token, so a prompt\n"
    "                 of P tokens (BOS counted) generates steps - P + 1\n"
    "  --temperature  0 = greedy (default), > 0 samples\n"
    "  --seed         RNG seed for sampling (default 42)\n"
    "  --policy       dense (the runner's exact reference attention) or a\n"
    "                 worker policy: full (default), sliding_window,\n"
    "                 streaming_llm, quest, quest_per_head (one page list\n"
    "                 per KV head), quest_rerank (the bounds' best 4k pages\n"
    "                 ranked by exact attention), quest_exact (every page\n"
    "                 ranked by exact attention: a diagnostic), arkvale, h2o,\n"
    "                 tova, arkv,\n"
    "                 arkv_last_query (ARKV ranking the prompt by its last query),\n"
    "                 h2o_per_head, arkv_per_head (each KV head keeps its own\n"
    "                 tokens)\n"
    "  --budget       KV budget per layer in tokens (default: the context)\n"
    "  --budget-unit  layer_tokens (default): --budget bounds each budgeted\n"
    "                 layer; memory: all layers' KV bytes stay within --budget\n"
    "                 x layers tokens: ArkVale and Quest budget every layer\n"
    "                 (Quest pages out what it does not attend), ARKV pays\n"
    "                 for its quantized tokens (not quest_per_head,\n"
    "                 quest_rerank, quest_exact)\n"
    "  --page-size    tokens per KV page for worker policies (default 16)\n"
    "  --digest-type  f32 (default) or f16: the page digests Quest and\n"
    "                 ArkVale score pages by (f16 halves their bytes)\n"
    "  --device       cpu (default), cuda or cuda:N: where the model's dense\n"
    "                 layers run and a worker policy's KV pools live and its\n"
    "                 decode attention runs (prefill attention, and 'dense'\n"
    "                 attention, stay on the CPU)\n"
    "  --target       kvtier-server host:port: pages are backed up there and\n"
    "                 stored prompt prefixes are reused (worker policies)\n"
    "  --cluster      with --target: true treats ADDR as one member of a\n"
    "                 cluster, whose pages live on their owners (default false)\n"
    "  --reuse        with --target: true (default) loads stored prefixes\n"
    "                 when faster, false always recomputes\n"
    "  --logits-out   write the prompt's tokens and next-token logits to a\n"
    "                 file: int32 n, int32 tokens[n], int32 vocab,\n"
    "                 float32 logits[vocab], little-endian\n"
    "  --metrics-listen  serve the worker's Prometheus /metrics on HOST:PORT\n"
    "                 (port 0 picks one; stderr names it; no authentication)\n"
    "  --metrics-hold-s  with --metrics-listen: keep serving this many\n"
    "                 seconds after the run (default 0, at most 3600)\n";

struct Args {
  std::string model;
  std::string tokenizer;
  std::string prompt;
  int steps = 256;
  float temperature = 0.0f;
  uint64_t seed = 42;
  std::string policy = "full";
  int budget = 0;  // 0 = not given
  BudgetUnit budget_unit = BudgetUnit::kLayerTokens;
  int page_size = 16;
  DType digest_dtype = DType::kF32;
  std::string logits_out;
  std::string target;
  bool cluster = false;
  bool reuse = true;
  std::string metrics_listen;
  int metrics_hold_s = 0;
  std::string device = "cpu";
};

absl::Status ParseArgs(int argc, char** argv, Args& args) {
  for (int i = 1; i < argc; ++i) {
    const absl::string_view flag = argv[i];
    if (flag == "--help" || flag == "-h") {
      return absl::CancelledError("help");
    }
    if (i + 1 >= argc) {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown flag or missing value: ", flag));
    }
    const std::string value = argv[++i];
    bool ok = true;
    if (flag == "--model") {
      args.model = value;
    } else if (flag == "--tokenizer") {
      args.tokenizer = value;
    } else if (flag == "--prompt") {
      args.prompt = value;
    } else if (flag == "--steps") {
      ok = absl::SimpleAtoi(value, &args.steps) && args.steps > 0;
    } else if (flag == "--temperature") {
      ok = absl::SimpleAtof(value, &args.temperature);
    } else if (flag == "--seed") {
      ok = absl::SimpleAtoi(value, &args.seed);
    } else if (flag == "--logits-out") {
      args.logits_out = value;
    } else if (flag == "--policy") {
      args.policy = value;
    } else if (flag == "--budget") {
      ok = absl::SimpleAtoi(value, &args.budget) && args.budget > 0;
    } else if (flag == "--budget-unit") {
      absl::StatusOr<BudgetUnit> unit = ParseBudgetUnit(value);
      if (!unit.ok()) return unit.status();
      args.budget_unit = *unit;
    } else if (flag == "--target") {
      args.target = value;
    } else if (flag == "--reuse") {
      ok = absl::SimpleAtob(value, &args.reuse);
    } else if (flag == "--cluster") {
      ok = absl::SimpleAtob(value, &args.cluster);
    } else if (flag == "--metrics-listen") {
      args.metrics_listen = value;
    } else if (flag == "--metrics-hold-s") {
      ok = absl::SimpleAtoi(value, &args.metrics_hold_s) && args.metrics_hold_s >= 0 &&
           args.metrics_hold_s <= 3600;
    } else if (flag == "--page-size") {
      ok = absl::SimpleAtoi(value, &args.page_size) && args.page_size > 0;
    } else if (flag == "--digest-type") {
      absl::StatusOr<DType> type = ParseDigestDType(value);
      if (!type.ok()) return type.status();
      args.digest_dtype = *type;
    } else if (flag == "--device") {
      args.device = value;
    } else {
      return absl::InvalidArgumentError(absl::StrCat("unknown flag ", flag));
    }
    if (!ok) {
      return absl::InvalidArgumentError(
          absl::StrCat("bad value for ", flag, ": '", value, "'"));
    }
  }
  if (args.model.empty()) {
    return absl::InvalidArgumentError("--model is required");
  }
  const auto& names = WorkerPolicyNames();
  if (args.policy != "dense" &&
      std::find(names.begin(), names.end(), args.policy) == names.end()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "unknown --policy '", args.policy, "'; known: dense, ",
        absl::StrJoin(names, ", ")));
  }
  if (args.policy == "dense" && !args.target.empty()) {
    return absl::InvalidArgumentError(
        "--target needs a worker policy; 'dense' keeps no pages");
  }
  if (args.metrics_hold_s > 0 && args.metrics_listen.empty()) {
    return absl::InvalidArgumentError("--metrics-hold-s needs --metrics-listen");
  }
  if (args.policy == "dense" && args.budget != 0) {
    return absl::InvalidArgumentError(
        "--budget does not apply to 'dense', which keeps every position");
  }
  return absl::OkStatus();
}

// The attention backend --policy names; `worker` is set when it is the
// worker runtime's.
absl::StatusOr<std::unique_ptr<AttentionBackend>> MakeBackend(
    const Args& args, const ModelConfig& c, worker::PageStoreBackend* store,
    WorkerAttentionBackend** worker) {
  if (args.policy == "dense") {
    auto dense = DenseAttentionBackend::Create(c.attention_shape());
    if (!dense.ok()) return dense.status();
    return std::unique_ptr<AttentionBackend>(*std::move(dense));
  }
  AttentionShape shape = c.attention_shape();
  // The worker is sized to the run's positions, not the model's whole
  // context (a file may declare a million positions for a run of ten), so
  // that the pools of policies that keep every page hold the run and a
  // budget at or above it reads as the whole run.
  shape.max_positions = std::min(shape.max_positions, args.steps);
  auto wb = WorkerAttentionBackend::Create(shape, {.policy = args.policy,
                                                   .budget_tokens = args.budget,
                                                   .budget_unit = args.budget_unit,
                                                   .page_size = args.page_size,
                                                   .digest_dtype = args.digest_dtype,
                                                   .max_sequences = 1,
                                                   .prefill_query_rows = 32,
                                                   .store = store,
                                                   .prefix_fetch = {},
                                                   .device = args.device});
  if (!wb.ok()) return wb.status();
  *worker = wb->get();
  return std::unique_ptr<AttentionBackend>(*std::move(wb));
}

absl::Status WriteLogits(const std::string& path, absl::Span<const int> tokens,
                         absl::Span<const float> logits) {
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("cannot write ", path));
  }
  const int32_t n = tokens.size(), vocab = logits.size();
  std::vector<int32_t> ids(tokens.begin(), tokens.end());
  bool ok = std::fwrite(&n, 4, 1, f) == 1 &&
            std::fwrite(ids.data(), 4, n, f) == static_cast<size_t>(n) &&
            std::fwrite(&vocab, 4, 1, f) == 1 &&
            std::fwrite(logits.data(), 4, vocab, f) ==
                static_cast<size_t>(vocab);
  ok = (std::fclose(f) == 0) && ok;
  if (!ok) return absl::DataLossError(absl::StrCat("short write to ", path));
  return absl::OkStatus();
}

void PrintWorkerStats(const WorkerAttentionBackend& backend,
                      const Args& args) {
  const worker::StepStats& st = backend.stats();
  const worker::CacheCounters& cc = backend.counters();
  std::fprintf(stderr,
               "kvtier-run: budget=%u pages of %d tokens (last layer), "
               "peak resident KV=%.2f MiB (all layers), "
               "decode layer-steps=%llu pages_attended=%llu "
               "pages_recalled=%llu pages_evicted=%llu pages_dropped=%llu "
               "attention=%.1f ms estimate=%.1f ms select=%.1f ms "
               "recall=%.1f ms\n",
               backend.layer_budgets().back(), args.page_size,
               backend.peak_resident_bytes() / 1048576.0,
               static_cast<unsigned long long>(st.steps),
               static_cast<unsigned long long>(st.pages_attended),
               static_cast<unsigned long long>(cc.pages_recalled),
               static_cast<unsigned long long>(cc.pages_evicted),
               static_cast<unsigned long long>(cc.pages_dropped),
               st.times.attention_ns / 1e6, st.times.estimate_ns / 1e6,
               st.times.select_ns / 1e6, st.times.recall_ns / 1e6);
}

absl::Status Run(const Args& args) {
  const absl::Time t0 = absl::Now();
  absl::StatusOr<LoadedModel> model = LoadModel(args.model, args.tokenizer);
  if (!model.ok()) return model.status();
  const ModelConfig& c = model->weights.config;
  std::fprintf(stderr,
               "kvtier-run: %s model: dim=%d layers=%d heads=%d/%d "
               "head_dim=%d vocab=%d context=%d, loaded in %.2f s\n",
               model->format.c_str(), c.dim, c.n_layers, c.n_heads,
               c.n_kv_heads, c.head_dim, c.vocab_size, c.max_positions,
               absl::ToDoubleSeconds(absl::Now() - t0));
  int steps = args.steps;
  if (steps > c.max_positions) {
    std::fprintf(stderr, "kvtier-run: --steps %d clamped to the context %d\n",
                 steps, c.max_positions);
    steps = c.max_positions;
  }
  std::unique_ptr<worker::PageStoreBackend> store;
  if (!args.target.empty() && args.cluster) {
    auto connected = worker::ClusterPageStore::Connect({args.target});
    if (!connected.ok()) return connected.status();
    store = *std::move(connected);
  } else if (!args.target.empty()) {
    auto connected = worker::ClientPageStore::Connect(args.target, {});
    if (!connected.ok()) return connected.status();
    store = *std::move(connected);
  }
  WorkerAttentionBackend* worker_backend = nullptr;
  absl::StatusOr<std::unique_ptr<AttentionBackend>> backend =
      MakeBackend(args, c, store.get(), &worker_backend);
  if (!backend.ok()) return backend.status();
  auto transformer =
      Transformer::Create(&model->weights, backend->get(), {.device = args.device});
  if (!transformer.ok()) return transformer.status();
  absl::StatusOr<Sampler> sampler = Sampler::Create(args.temperature, args.seed);
  if (!sampler.ok()) return sampler.status();

  std::unique_ptr<RunMetrics> metrics;
  if (!args.metrics_listen.empty()) {
    absl::StatusOr<std::unique_ptr<RunMetrics>> started = RunMetrics::Start(args.metrics_listen);
    if (!started.ok()) return started.status();
    metrics = *std::move(started);
    std::fprintf(stderr, "kvtier-run: metrics on port %d\n", metrics->port());
  }
  PrefixReuseReport reuse_report;
  GenerationOptions options;
  options.steps = steps;
  options.add_bos = model->add_bos;
  options.stop_tokens = model->stop_tokens;
  bool wrote_text = false;
  options.on_text = [&](absl::string_view piece) {
    std::fwrite(piece.data(), 1, piece.size(), stdout);
    std::fflush(stdout);
    wrote_text = true;
    if (metrics != nullptr) metrics->Publish(worker_backend, reuse_report);
  };
  std::unique_ptr<ReuseEstimator> estimator;
  if (store != nullptr) {
    auto est = ReuseEstimator::Create(c);
    if (!est.ok()) return est.status();
    estimator = std::make_unique<ReuseEstimator>(*std::move(est));
    // The estimate needs the prefill speed before the first request.
    if (args.reuse) {
      if (absl::Status s = CalibratePrefill(model->weights, std::min(32, c.max_positions),
                                            *estimator);
          !s.ok()) {
        return s;
      }
    }
    options.prefill = [&](SequenceId seq, absl::Span<const int> tokens) {
      return PrefillWithReuse(**transformer, *worker_backend, seq, tokens, *estimator,
                              {.enabled = args.reuse, .probe_pages = 64}, &reuse_report);
    };
  }
  absl::Status dump_status;
  if (!args.logits_out.empty()) {
    options.on_prompt_logits = [&](absl::Span<const int> tokens,
                                   absl::Span<const float> logits) {
      dump_status = WriteLogits(args.logits_out, tokens, logits);
    };
  }
  absl::StatusOr<GenerationResult> result =
      Generate(**transformer, **backend, *model->tokenizer, *sampler,
               args.prompt, options);
  // llama2.c ends its output with a newline; a run that failed before any
  // text leaves stdout empty.
  if (result.ok() || wrote_text) {
    std::fputc('\n', stdout);
    std::fflush(stdout);
  }
  if (metrics != nullptr) metrics->Publish(worker_backend, reuse_report);
  if (!result.ok()) return result.status();
  if (!dump_status.ok()) return dump_status;
  std::fprintf(stderr,
               "kvtier-run: policy=%s prompt=%d tokens (%.1f tok/s; hand-off to the cache "
               "%.3f s after the first token), generated=%d tokens (%.1f tok/s)\n",
               args.policy.c_str(), result->prompt_tokens,
               result->prompt_tokens / std::max(result->prefill_seconds, 1e-9),
               result->handoff_seconds, result->generated_tokens,
               result->generated_tokens /
                   std::max(result->decode_seconds, 1e-9));
  if (worker_backend != nullptr) PrintWorkerStats(*worker_backend, args);
  if (store != nullptr) {
    std::fprintf(stderr, "kvtier-run: prefix reuse: %s\n",
                 reuse_report.DebugString().c_str());
  }
  if (metrics != nullptr && args.metrics_hold_s > 0) {
    std::fprintf(stderr, "kvtier-run: serving metrics for %d s more\n", args.metrics_hold_s);
    absl::SleepFor(absl::Seconds(args.metrics_hold_s));
  }
  return absl::OkStatus();
}

}  // namespace
}  // namespace kvtier::model

int main(int argc, char** argv) {
  kvtier::model::Args args;
  absl::Status parsed = kvtier::model::ParseArgs(argc, argv, args);
  if (absl::IsCancelled(parsed)) {
    std::fputs(kvtier::model::kUsage, stdout);
    return 0;
  }
  if (!parsed.ok()) {
    std::fprintf(stderr, "kvtier-run: %s\n%s", parsed.ToString().c_str(),
                 kvtier::model::kUsage);
    return 2;
  }
  kvtier::model::UseCpuBlasKernels("kvtier-run", argv);
  absl::Status status = kvtier::model::Run(args);
  if (!status.ok()) {
    std::fprintf(stderr, "kvtier-run: %s\n", status.ToString().c_str());
    return 1;
  }
  return 0;
}
