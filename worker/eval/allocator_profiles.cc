#include "worker/eval/allocator_profiles.h"

#include <algorithm>
#include <filesystem>
#include <memory>
#include <system_error>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/json_text.h"
#include "common/status_macros.h"
#include "worker/budget/lukv_allocator.h"
#include "worker/budget/profile.h"
#include "worker/eval/model_session.h"
#include "worker/eval/trace_recorder.h"
#include "worker/model/dense_attention_backend.h"
#include "worker/sim/simulator.h"
#include "worker/trace/trace_profiler.h"

namespace kvtier::eval {
namespace {

constexpr char kXkvSuffix[] = ".xkv.prof";
constexpr char kLukvSuffix[] = ".lukv.table";

}  // namespace

absl::Status RecordGreedyTrace(const model::LoadedModel& m, const std::vector<int>& prompt,
                               const std::string& path, uint32_t n_prompt_queries,
                               uint32_t decode_steps) {
  std::unique_ptr<model::DenseAttentionBackend> dense;
  ASSIGN_OR_RETURN(dense, model::DenseAttentionBackend::Create(m.weights.config.attention_shape()));
  std::unique_ptr<TraceRecordingBackend> rec;
  ASSIGN_OR_RETURN(rec, TraceRecordingBackend::Create(dense.get(), path, prompt.size(),
                                                      n_prompt_queries, decode_steps));
  std::vector<int> generated;
  ForcedRun run;
  // The first token comes from the prefill; each later one is a step.
  ASSIGN_OR_RETURN(run, RunForced(m, *rec, prompt, {}, static_cast<int>(decode_steps) + 1,
                                  &generated));
  RETURN_IF_ERROR(rec->Finish());
  Progress(absl::StrFormat("trace: %zu prompt tokens in %.1f s (%.0f tok/s), %u decode steps",
                           prompt.size(), run.prefill_seconds,
                           prompt.size() / std::max(run.prefill_seconds, 1e-9), decode_steps));
  return absl::OkStatus();
}

absl::Status CheckAllocatorNames(const std::vector<std::string>& allocators) {
  for (const std::string& a : allocators) {
    if (a != "uniform" && a != "xkv" && a != "lukv") {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown allocator ", JsonQuoted(a), " (uniform, xkv, lukv)"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::map<std::string, std::string>> BuildAllocatorProfiles(
    const TraceReader& trace, const std::vector<std::string>& allocators,
    const std::string& path_stem) {
  RETURN_IF_ERROR(CheckAllocatorNames(allocators));
  std::map<std::string, std::string> paths;
  for (const std::string& a : allocators) {
    if (a == "uniform") {
      paths[a] = "";
    } else if (a == "xkv") {
      ASSIGN_OR_RETURN(XkvProfile p, ProfileXkv(trace));
      paths[a] = path_stem + kXkvSuffix;
      RETURN_IF_ERROR(WriteXkvProfile(paths[a], p));
    } else if (a == "lukv") {
      ASSIGN_OR_RETURN(LukvProfile p, ProfileLukv(trace));
      ASSIGN_OR_RETURN(LukvTable t, BuildLukvTable(p, LukvSolverOptions()));
      paths[a] = path_stem + kLukvSuffix;
      RETURN_IF_ERROR(WriteLukvTable(paths[a], t));
    }
  }
  return paths;
}

void RemoveAllocatorProfiles(const std::string& path_stem) {
  std::error_code ignored;
  for (const char* suffix : {kXkvSuffix, kLukvSuffix}) {
    std::filesystem::remove(path_stem + suffix, ignored);
  }
}

absl::StatusOr<std::vector<int>> AllocatedLayerTokens(const std::string& allocator,
                                                      const std::string& profile,
                                                      uint32_t budget_pages, uint32_t min_pages,
                                                      uint32_t n_layers, uint32_t n_kv_heads,
                                                      uint32_t context, uint32_t page_size) {
  const worker::AllocatorChoice c{.kind = allocator, .path = profile,
                                  .total_pages = budget_pages * n_layers, .min_pages = min_pages};
  ASSIGN_OR_RETURN(std::vector<uint32_t> pages,
                   worker::AllocateLayerBudgets(c, n_layers, n_kv_heads, context, page_size));
  std::vector<int> tokens;
  for (uint32_t p : pages) tokens.push_back(static_cast<int>(p * page_size));
  return tokens;
}

}  // namespace kvtier::eval
