// kvtier-eval: fidelity of budgeted KV caches against the full cache.
//
//   kvtier-eval fidelity --model M [--context 8192] [--trace_steps 16]
//       [--budgets 4,8,16] [--policies ...] [--allocators uniform,xkv,lukv]
//       [--e2e_context 2048] [--e2e_cases 2] [--json out.json] [--png out.png]
//   kvtier-eval logits --model M --text FILE --out FILE [--max_tokens 1024]
//   kvtier-eval longrun --model M [--target 127.0.0.1:50051] [--prompt_tokens 2048]
//       [--steps 96] [--budget_fraction 8] [--policy arkvale] [--second_question true]
//   kvtier-eval prefix --model M [--target 127.0.0.1:50051]
//       [--prefix_lengths 1024,2048,4096,8064] [--answer_steps 8] [--json out.json] [--png out.png]
//   kvtier-eval needles --model M [--needle_contexts 1024,4096] [--cases 18]
//       [--tasks passkey,kv] [--fillers landmark,travel,workshop]
//       [--key_formats digits,words,uuid] [--depths 0,0.25,0.5,0.75,1]
//       [--policies ...] [--budgets 4,8,16] [--needle_allocators uniform,xkv,lukv]
//       [--budget_unit layer_tokens|memory] [--page_size 16] [--digest_type f32|f16]
//       [--json out.json] [--png out.png]
//   kvtier-eval digests --model M [--needle_contexts 1024,4096] [--cases 18]
//       [--digest_page_sizes 16,32] [--recall_ks 1] [--budgets 4,8,16] [--json out.json]
//       (and the needles' --tasks, --fillers, --key_formats, --depths)
//   kvtier-eval continuation --model M [--continuation_context 1024] [--lengths 16,64,256]
//       [--prompts 3] [--tasks passkey,kv] [--continuation_fillers travel,workshop]
//       [--policies ...] [--budgets 4,8,16] [--budget_unit layer_tokens|memory]
//       [--json out.json] [--png out.png]
//
// Progress goes to stderr; the table (fidelity) to stdout.
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "client/security_flags.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/status_macros.h"
#include "common/tool_usage.h"
#include "worker/eval/continuation_eval.h"
#include "worker/eval/digest_eval.h"
#include "worker/eval/fidelity_eval.h"
#include "worker/eval/long_run.h"
#include "worker/eval/model_session.h"
#include "worker/eval/needle_eval.h"
#include "worker/eval/prefix_eval.h"
#include "worker/model/blas_kernels.h"
#include "worker/model/dense_attention_backend.h"

ABSL_FLAG(std::string, model, "", "GGUF file or llama2.c checkpoint");
ABSL_FLAG(std::string, tokenizer, "", "llama2.c tokenizer (GGUF carries its own)");
ABSL_FLAG(uint32_t, context, 8192, "fidelity: trace tokens (prompt + decode)");
ABSL_FLAG(uint32_t, trace_steps, 16, "fidelity: decode steps in the trace");
ABSL_FLAG(uint32_t, page_size, 16, "tokens per page");
ABSL_FLAG(std::string, digest_type, "f32", "needles: page digests in f32 or f16");
ABSL_FLAG(std::string, device, "cpu",
          "where the model's dense layers and the worker's KV pools and decode attention "
          "run: cpu, cuda or cuda:N (prefill attention and the dense reference stay on "
          "the CPU; fidelity, needles, continuation, longrun, prefix)");
ABSL_FLAG(std::string, budgets, "4,8,16", "fidelity, needles: budget = context / each");
ABSL_FLAG(std::string, policies,
          "full,sliding_window,streaming_llm,h2o,tova,quest,arkvale,arkv",
          "fidelity, needles: policies");
ABSL_FLAG(std::string, allocators, "uniform,xkv,lukv", "fidelity: layer budget allocators");
ABSL_FLAG(std::string, allocator_policies, "sliding_window,streaming_llm,h2o,tova,arkvale,arkv",
          "fidelity: policies also run with the non-uniform allocators");
ABSL_FLAG(uint32_t, e2e_context, 2048, "fidelity: end-to-end passkey prompt tokens (0: skip)");
ABSL_FLAG(uint32_t, e2e_cases, 2, "fidelity: end-to-end passkey cases (depths 0..100%)");
ABSL_FLAG(std::string, trace, "/tmp/kvtier-eval.kvtrace", "fidelity: trace file");
ABSL_FLAG(bool, reuse_trace, false, "fidelity: reuse --trace when it exists");
ABSL_FLAG(std::string, json, "", "fidelity: write the JSON report here");
ABSL_FLAG(std::string, png, "", "fidelity: plot accuracy vs budget here (needs --json)");
ABSL_FLAG(std::string, python, ".venv/bin/python", "python with matplotlib, for --png");
ABSL_FLAG(std::string, text, "", "logits: text file to run");
ABSL_FLAG(std::string, out, "", "logits: output file");
ABSL_FLAG(int, max_tokens, 1024, "logits: tokens of the text (BOS included)");
ABSL_FLAG(std::string, target, "127.0.0.1:50051", "longrun: kvtier-server (empty: in-process)");
ABSL_FLAG(int, prompt_tokens, 2048, "longrun: prompt tokens");
ABSL_FLAG(int, steps, 96, "longrun: greedy decode steps");
ABSL_FLAG(int, budget_fraction, 8, "longrun: budget = context / this");
ABSL_FLAG(std::string, policy, "arkvale", "longrun: policy");
ABSL_FLAG(std::string, document, "travel",
          "longrun: the filler around the secret (travel, workshop: prose; landmark: the "
          "papers' repeated sentences)");
ABSL_FLAG(int, progress_every, 16, "longrun: steps between progress lines");
ABSL_FLAG(bool, second_question, true,
          "longrun: then ask the same document another question, with prefix reuse and without");
ABSL_FLAG(std::string, prefix_lengths, "1024,2048,4096,8064", "prefix: shared prefix tokens");
ABSL_FLAG(int, answer_steps, 8, "prefix, longrun's second question: greedy tokens per answer");
ABSL_FLAG(std::string, needle_contexts, "1024",
          "needles, digests: prompt + answer tokens of each case");
ABSL_FLAG(std::string, budget_unit, "layer_tokens",
          "needles, continuation: what a budget bounds: layer_tokens (context / budget tokens "
          "in every budgeted layer) or memory (all layers' KV bytes within 1 / budget of the "
          "full cache's: no dense layers, Quest paging out what it does not attend, quantized "
          "tokens at their cost)");
ABSL_FLAG(std::string, needle_allocators, "uniform",
          "needles: layer budget allocators (uniform, xkv, lukv)");
ABSL_FLAG(std::string, digest_page_sizes, "16,32", "digests: page sizes compared");
ABSL_FLAG(std::string, recall_ks, "1", "digests: absolute k of recall@k (besides the budgets)");
ABSL_FLAG(std::string, tasks, "passkey,kv", "needles, continuation: tasks (passkey, kv)");
ABSL_FLAG(std::string, fillers, "landmark,travel,workshop", "needles: fillers");
ABSL_FLAG(std::string, key_formats, "digits,words,uuid", "needles: key formats");
ABSL_FLAG(std::string, depths, "0,0.25,0.5,0.75,1", "needles: needle depths (0..1)");
ABSL_FLAG(uint32_t, cases, 18, "needles: cases per context");
ABSL_FLAG(uint64_t, seed, 42, "needles, continuation: seed of the cases");
ABSL_FLAG(uint32_t, continuation_context, 1024,
          "continuation: prompt + the longest continuation, tokens");
ABSL_FLAG(std::string, lengths, "16,64,256", "continuation: continuation lengths compared");
ABSL_FLAG(uint32_t, prompts, 3, "continuation: prompts");
ABSL_FLAG(std::string, continuation_fillers, "travel,workshop", "continuation: fillers");

namespace kvtier::eval {
namespace {

absl::StatusOr<std::vector<uint32_t>> ParseList(const std::string& s) {
  std::vector<uint32_t> out;
  for (absl::string_view part : absl::StrSplit(s, ',', absl::SkipEmpty())) {
    uint32_t v;
    if (!absl::SimpleAtoi(part, &v) || v == 0) {
      return absl::InvalidArgumentError(absl::StrCat("bad number '", part, "' in '", s, "'"));
    }
    out.push_back(v);
  }
  return out;
}

std::vector<std::string> Names(const std::string& s) {
  return absl::StrSplit(s, ',', absl::SkipEmpty());
}

// Writes `json` to --json (or `fallback`) and renders its table (and --png)
// with ops/eval/`script`; a failing script leaves the JSON and says so.
void WriteAndReport(const std::string& json, const std::string& fallback,
                    const std::string& script) {
  const std::string json_path = absl::GetFlag(FLAGS_json);
  const std::string path = json_path.empty() ? fallback : json_path;
  std::ofstream(path) << json;
  std::fprintf(stderr, "kvtier-eval: wrote %s\n", path.c_str());
  const char* root = std::getenv("KVTIER_ROOT");
  std::string cmd = absl::StrCat(absl::GetFlag(FLAGS_python), " ", root != nullptr ? root : ".",
                                 "/ops/eval/", script, " ", path);
  if (!absl::GetFlag(FLAGS_png).empty()) absl::StrAppend(&cmd, " --png ", absl::GetFlag(FLAGS_png));
  if (std::system(cmd.c_str()) != 0) {
    std::fprintf(stderr, "kvtier-eval: '%s' failed; the JSON is in %s\n", cmd.c_str(),
                 path.c_str());
  }
}

// Every position's next-token logits: int32 n, int32 ids[n], int32 vocab,
// float32 logits[n][vocab] (row i follows token i).
absl::Status RunLogits(const model::LoadedModel& m) {
  std::ifstream in(absl::GetFlag(FLAGS_text));
  if (!in) return absl::NotFoundError("cannot read --text " + absl::GetFlag(FLAGS_text));
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<int> ids;
  ASSIGN_OR_RETURN(ids, Encode(m, text, true));
  const int max_tokens = absl::GetFlag(FLAGS_max_tokens);
  if (max_tokens < 2) return absl::InvalidArgumentError("--max_tokens must be >= 2");
  if (static_cast<int>(ids.size()) > max_tokens) ids.resize(max_tokens);
  std::unique_ptr<model::DenseAttentionBackend> dense;
  ASSIGN_OR_RETURN(dense, model::DenseAttentionBackend::Create(m.weights.config.attention_shape()));
  // Forced run: row i is the prediction after ids[0..i].
  const std::vector<int> prompt(ids.begin(), ids.begin() + 1);
  const std::vector<int> forced(ids.begin() + 1, ids.end());
  ForcedRun run;
  ASSIGN_OR_RETURN(run, RunForced(m, *dense, prompt, forced, 0, nullptr));
  std::FILE* f = std::fopen(absl::GetFlag(FLAGS_out).c_str(), "wb");
  if (f == nullptr) return absl::InvalidArgumentError("cannot write --out");
  const int32_t n = static_cast<int32_t>(run.logits.size());
  const int32_t vocab = static_cast<int32_t>(run.logits[0].size());
  std::vector<int32_t> ids32(ids.begin(), ids.begin() + n);
  bool ok = std::fwrite(&n, 4, 1, f) == 1 && std::fwrite(ids32.data(), 4, n, f) == size_t(n) &&
            std::fwrite(&vocab, 4, 1, f) == 1;
  for (const auto& row : run.logits) ok = ok && std::fwrite(row.data(), 4, vocab, f) == size_t(vocab);
  ok = std::fclose(f) == 0 && ok;
  if (!ok) return absl::DataLossError("short write to --out");
  std::fprintf(stderr, "kvtier-eval: %d positions x %d logits written (%.1f tok/s)\n", n, vocab,
               n / std::max(run.decode_seconds + run.prefill_seconds, 1e-9));
  return absl::OkStatus();
}

absl::Status RunFidelityCommand(const model::LoadedModel& m) {
  FidelityOptions o;
  o.trace_path = absl::GetFlag(FLAGS_trace);
  o.reuse_trace = absl::GetFlag(FLAGS_reuse_trace);
  o.context = absl::GetFlag(FLAGS_context);
  o.trace_steps = absl::GetFlag(FLAGS_trace_steps);
  o.page_size = absl::GetFlag(FLAGS_page_size);
  o.device = absl::GetFlag(FLAGS_device);
  ASSIGN_OR_RETURN(o.budget_fractions, ParseList(absl::GetFlag(FLAGS_budgets)));
  o.policies = Names(absl::GetFlag(FLAGS_policies));
  o.allocators = Names(absl::GetFlag(FLAGS_allocators));
  o.allocator_policies = Names(absl::GetFlag(FLAGS_allocator_policies));
  o.e2e_context = absl::GetFlag(FLAGS_e2e_context);
  o.e2e_cases = absl::GetFlag(FLAGS_e2e_cases);
  if (o.context <= o.trace_steps + 64 || o.trace_steps == 0 || o.page_size == 0 ||
      o.context > static_cast<uint32_t>(m.weights.config.max_positions)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--context ", o.context, " must exceed --trace_steps + 64 and fit the model's ",
        m.weights.config.max_positions, "; --trace_steps and --page_size positive"));
  }
  std::string json;
  ASSIGN_OR_RETURN(json, RunFidelity(m, o));
  WriteAndReport(json, "/tmp/kvtier-eval.json", "fidelity_report.py");
  return absl::OkStatus();
}

absl::Status RunPrefixCommand(const model::LoadedModel& m) {
  PrefixEvalOptions o;
  o.target = absl::GetFlag(FLAGS_target);
  client::ApplySecurityFlags(&o.client);
  o.policy = absl::GetFlag(FLAGS_policy);
  o.budget_fraction = absl::GetFlag(FLAGS_budget_fraction);
  o.page_size = static_cast<int>(absl::GetFlag(FLAGS_page_size));
  o.device = absl::GetFlag(FLAGS_device);
  o.steps = absl::GetFlag(FLAGS_answer_steps);
  ASSIGN_OR_RETURN(std::vector<uint32_t> lengths, ParseList(absl::GetFlag(FLAGS_prefix_lengths)));
  o.prefix_tokens.assign(lengths.begin(), lengths.end());
  std::string json;
  ASSIGN_OR_RETURN(json, RunPrefixEval(m, o));
  WriteAndReport(json, "/tmp/kvtier-eval-prefix.json", "prefix_report.py");
  return absl::OkStatus();
}

absl::StatusOr<std::vector<double>> ParseDepths(const std::string& s) {
  std::vector<double> out;
  for (absl::string_view part : absl::StrSplit(s, ',', absl::SkipEmpty())) {
    double v;
    if (!absl::SimpleAtod(part, &v) || !(v >= 0 && v <= 1)) {
      return absl::InvalidArgumentError(absl::StrCat("bad depth '", part, "' in '", s,
                                                     "' (0..1)"));
    }
    out.push_back(v);
  }
  return out;
}

template <typename T>
absl::StatusOr<std::vector<T>> ParseEach(const std::string& s,
                                         absl::StatusOr<T> (*parse)(const std::string&)) {
  std::vector<T> out;
  for (const std::string& name : Names(s)) {
    ASSIGN_OR_RETURN(T v, parse(name));
    out.push_back(v);
  }
  return out;
}

// The needle suite's flags.
absl::StatusOr<NeedleSuiteOptions> SuiteFlags() {
  NeedleSuiteOptions s;
  ASSIGN_OR_RETURN(s.contexts, ParseList(absl::GetFlag(FLAGS_needle_contexts)));
  ASSIGN_OR_RETURN(s.tasks, ParseEach(absl::GetFlag(FLAGS_tasks), &ParseNeedleTask));
  ASSIGN_OR_RETURN(s.fillers, ParseEach(absl::GetFlag(FLAGS_fillers), &ParseNeedleFiller));
  ASSIGN_OR_RETURN(s.formats, ParseEach(absl::GetFlag(FLAGS_key_formats), &ParseKeyFormat));
  ASSIGN_OR_RETURN(s.depths, ParseDepths(absl::GetFlag(FLAGS_depths)));
  s.cases = absl::GetFlag(FLAGS_cases);
  s.seed = absl::GetFlag(FLAGS_seed);
  return s;
}

absl::Status RunNeedlesCommand(const model::LoadedModel& m) {
  NeedleEvalOptions o;
  ASSIGN_OR_RETURN(o.suite, SuiteFlags());
  o.policies = Names(absl::GetFlag(FLAGS_policies));
  ASSIGN_OR_RETURN(o.budget_fractions, ParseList(absl::GetFlag(FLAGS_budgets)));
  o.allocators = Names(absl::GetFlag(FLAGS_needle_allocators));
  ASSIGN_OR_RETURN(o.budget_unit, model::ParseBudgetUnit(absl::GetFlag(FLAGS_budget_unit)));
  o.page_size = static_cast<int>(absl::GetFlag(FLAGS_page_size));
  ASSIGN_OR_RETURN(o.digest_dtype, model::ParseDigestDType(absl::GetFlag(FLAGS_digest_type)));
  o.device = absl::GetFlag(FLAGS_device);
  std::string json;
  ASSIGN_OR_RETURN(json, RunNeedleEval(m, o));
  WriteAndReport(json, "/tmp/kvtier-eval-needles.json", "needle_report.py");
  return absl::OkStatus();
}

absl::Status RunDigestsCommand(const model::LoadedModel& m) {
  DigestEvalOptions o;
  ASSIGN_OR_RETURN(o.suite, SuiteFlags());
  ASSIGN_OR_RETURN(o.study.page_sizes, ParseList(absl::GetFlag(FLAGS_digest_page_sizes)));
  ASSIGN_OR_RETURN(o.study.ks, ParseList(absl::GetFlag(FLAGS_recall_ks)));
  ASSIGN_OR_RETURN(o.study.budget_fractions, ParseList(absl::GetFlag(FLAGS_budgets)));
  std::string json;
  ASSIGN_OR_RETURN(json, RunDigestEval(m, o));
  WriteAndReport(json, "/tmp/kvtier-eval-digests.json", "digest_report.py");
  return absl::OkStatus();
}

absl::Status RunContinuationCommand(const model::LoadedModel& m) {
  ContinuationOptions o;
  o.context = absl::GetFlag(FLAGS_continuation_context);
  ASSIGN_OR_RETURN(o.lengths, ParseList(absl::GetFlag(FLAGS_lengths)));
  o.prompts = absl::GetFlag(FLAGS_prompts);
  ASSIGN_OR_RETURN(o.tasks, ParseEach(absl::GetFlag(FLAGS_tasks), &ParseNeedleTask));
  ASSIGN_OR_RETURN(o.fillers,
                   ParseEach(absl::GetFlag(FLAGS_continuation_fillers), &ParseNeedleFiller));
  o.policies = Names(absl::GetFlag(FLAGS_policies));
  ASSIGN_OR_RETURN(o.budget_fractions, ParseList(absl::GetFlag(FLAGS_budgets)));
  ASSIGN_OR_RETURN(o.budget_unit, model::ParseBudgetUnit(absl::GetFlag(FLAGS_budget_unit)));
  o.page_size = static_cast<int>(absl::GetFlag(FLAGS_page_size));
  o.device = absl::GetFlag(FLAGS_device);
  o.seed = absl::GetFlag(FLAGS_seed);
  std::string json;
  ASSIGN_OR_RETURN(json, RunContinuationEval(m, o));
  WriteAndReport(json, "/tmp/kvtier-eval-continuation.json", "continuation_report.py");
  return absl::OkStatus();
}

absl::Status Main(const std::string& command) {
  model::LoadedModel m;
  ASSIGN_OR_RETURN(m, model::LoadModel(absl::GetFlag(FLAGS_model), absl::GetFlag(FLAGS_tokenizer)));
  if (command == "fidelity") return RunFidelityCommand(m);
  if (command == "logits") return RunLogits(m);
  if (command == "longrun") {
    LongRunOptions o;
    o.target = absl::GetFlag(FLAGS_target);
    client::ApplySecurityFlags(&o.client);
    o.policy = absl::GetFlag(FLAGS_policy);
    o.prompt_tokens = absl::GetFlag(FLAGS_prompt_tokens);
    o.filler = absl::GetFlag(FLAGS_document);
    o.steps = absl::GetFlag(FLAGS_steps);
    o.budget_fraction = absl::GetFlag(FLAGS_budget_fraction);
    o.page_size = static_cast<int>(absl::GetFlag(FLAGS_page_size));
    o.device = absl::GetFlag(FLAGS_device);
    o.progress_every = absl::GetFlag(FLAGS_progress_every);
    o.second_question = absl::GetFlag(FLAGS_second_question);
    o.answer_steps = absl::GetFlag(FLAGS_answer_steps);
    return RunLong(m, o);
  }
  if (command == "prefix") return RunPrefixCommand(m);
  if (command == "needles") return RunNeedlesCommand(m);
  if (command == "continuation") return RunContinuationCommand(m);
  if (command == "digests") return RunDigestsCommand(m);
  return absl::InvalidArgumentError("unknown command '" + command + "'");
}

}  // namespace
}  // namespace kvtier::eval

int main(int argc, char** argv) {
  kvtier::SetToolUsage(
      "kvtier-eval fidelity|logits|longrun|prefix|needles|continuation|digests --model PATH "
      "[flags]");
  std::vector<char*> args = absl::ParseCommandLine(argc, argv);
  if (args.size() != 2) {
    std::fprintf(stderr,
                 "usage: kvtier-eval fidelity|logits|longrun|prefix|needles|continuation|digests\n"
                 "       --model PATH [flags]  (--helpfull lists the flags)\n");
    return 2;
  }
  kvtier::model::UseCpuBlasKernels("kvtier-eval", argv);
  const absl::Status s = kvtier::eval::Main(args[1]);
  if (!s.ok()) {
    std::fprintf(stderr, "kvtier-eval: %s\n", s.ToString().c_str());
    return 1;
  }
  return 0;
}
