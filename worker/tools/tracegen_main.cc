// kvtier-tracegen: writes a synthetic decode trace (worker/trace/README.md).
//
//   kvtier-tracegen --out=trace.kvt --prompt_len=32768 --layers=8
//       --q_heads=32 --kv_heads=8 --head_dim=128 --steps=64 --seed=7
//
// Every option of TraceGenOptions is a flag (see --help); unknown flags and
// malformed values are errors.
#include <cstdio>
#include <cstring>
#include <functional>
#include <map>
#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "worker/trace/trace_gen.h"

namespace {

using Setter = std::function<bool(const std::string&)>;

Setter U32(uint32_t* out) {
  return [out](const std::string& v) { return absl::SimpleAtoi(v, out); };
}
Setter U64(uint64_t* out) {
  return [out](const std::string& v) { return absl::SimpleAtoi(v, out); };
}
Setter F64(double* out) {
  return [out](const std::string& v) { return absl::SimpleAtod(v, out); };
}

int Usage(const std::map<std::string, Setter>& flags) {
  std::fprintf(
      stderr,
      "usage: kvtier-tracegen --out=PATH [--flag=value ...]\n"
      "flags (defaults as in worker/trace/trace_gen.h):\n  --dtype=f32|f16\n");
  for (const auto& [name, setter] : flags) {
    std::fprintf(stderr, "  --%s\n", name.c_str());
  }
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  kvtier::TraceGenOptions o;
  std::string out;
  std::map<std::string, Setter> flags = {
      {"layers", U32(&o.n_layers)},
      {"q_heads", U32(&o.n_q_heads)},
      {"kv_heads", U32(&o.n_kv_heads)},
      {"head_dim", U32(&o.head_dim)},
      {"prompt_len", U32(&o.prompt_len)},
      {"prompt_queries", U32(&o.n_prompt_queries)},
      {"steps", U32(&o.decode_steps)},
      {"seed", U64(&o.seed)},
      {"sinks", U32(&o.n_sink_tokens)},
      {"sink_logit", F64(&o.sink_logit)},
      {"rope_pairs", U32(&o.n_rope_pairs)},
      {"local_logit", F64(&o.local_logit)},
      {"local_window", U32(&o.local_window)},
      {"retrieval_heads", U32(&o.n_retrieval_heads)},
      {"needles", U32(&o.n_needles)},
      {"needle_margin", U32(&o.needle_margin)},
      {"needle_logit", F64(&o.needle_logit)},
      {"noise_logit", F64(&o.noise_logit)},
  };
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    const size_t eq = arg.find('=');
    if (arg.rfind("--", 0) != 0 || eq == std::string::npos) {
      return Usage(flags);
    }
    const std::string name = arg.substr(2, eq - 2);
    const std::string value = arg.substr(eq + 1);
    if (name == "out") {
      out = value;
    } else if (name == "dtype") {
      if (value == "f32") {
        o.dtype = kvtier::TraceDtype::kF32;
      } else if (value == "f16") {
        o.dtype = kvtier::TraceDtype::kF16;
      } else {
        std::fprintf(stderr, "bad --dtype=%s (f32 or f16)\n", value.c_str());
        return 2;
      }
    } else if (auto it = flags.find(name); it == flags.end()) {
      std::fprintf(stderr, "unknown flag --%s\n", name.c_str());
      return Usage(flags);
    } else if (!it->second(value)) {
      std::fprintf(stderr, "bad value for --%s: '%s'\n", name.c_str(),
                   value.c_str());
      return 2;
    }
  }
  if (out.empty()) return Usage(flags);
  const absl::Status status = kvtier::GenerateTraceFile(o, out);
  if (!status.ok()) {
    std::fprintf(stderr, "kvtier-tracegen: %s\n", status.ToString().c_str());
    return 1;
  }
  return 0;
}
