// kvtier-profile: profiling runs and budget allocation from the command line
// (xkv and lukv profiles from traces, the LU-KV table, per-layer budgets);
// kUsage below, which --help prints, lists the commands and their flags.
// Files are described in worker/budget/profile.h.
#include <chrono>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/status_macros.h"
#include "worker/budget/allocator.h"
#include "worker/budget/lukv_allocator.h"
#include "worker/budget/profile.h"
#include "worker/budget/xkv_allocator.h"
#include "worker/trace/trace_profiler.h"

namespace kvtier {
namespace {

class Flags {
 public:
  absl::Status Parse(int argc, char** argv) {
    for (int i = 2; i < argc; ++i) {
      const std::string arg = argv[i];
      const size_t eq = arg.find('=');
      if (arg.rfind("--", 0) != 0) {
        return absl::InvalidArgumentError("bad argument " + arg);
      }
      values_[arg.substr(
          2, eq == std::string::npos ? std::string::npos : eq - 2)] =
          eq == std::string::npos ? "1" : arg.substr(eq + 1);
    }
    return absl::OkStatus();
  }
  bool Has(const std::string& name) const { return values_.count(name) > 0; }
  absl::StatusOr<std::string> Str(const std::string& name) {
    used_[name] = true;
    auto it = values_.find(name);
    if (it == values_.end()) {
      return absl::InvalidArgumentError("missing --" + name);
    }
    return it->second;
  }
  template <typename T>
  absl::StatusOr<T> Num(const std::string& name, T fallback) {
    used_[name] = true;
    auto it = values_.find(name);
    if (it == values_.end()) return fallback;
    T v;
    bool ok;
    if constexpr (std::is_floating_point_v<T>) {
      ok = absl::SimpleAtod(it->second, &v);
    } else {
      ok = absl::SimpleAtoi(it->second, &v);
    }
    if (!ok) {
      return absl::InvalidArgumentError(
          absl::StrCat("bad value for --", name, ": ", it->second));
    }
    return v;
  }
  // Flags given but never asked for are typos; refuse them.
  absl::Status CheckAllUsed() const {
    for (const auto& [name, value] : values_) {
      if (!used_.count(name)) {
        return absl::InvalidArgumentError("unknown flag --" + name);
      }
    }
    return absl::OkStatus();
  }

 private:
  std::map<std::string, std::string> values_;
  std::map<std::string, bool> used_;
};

double SecondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
      .count();
}

template <typename Profile, typename Options, typename Fn>
absl::StatusOr<Profile> ProfileTraces(const std::string& list,
                                      const Options& options, Fn profile_fn) {
  Profile merged;
  bool first = true;
  for (const std::string& path :
       std::vector<std::string>(absl::StrSplit(list, ','))) {
    ASSIGN_OR_RETURN(TraceReader trace, TraceReader::Open(path));
    ASSIGN_OR_RETURN(Profile p, profile_fn(trace, options));
    if (first) {
      merged = std::move(p);
      first = false;
    } else {
      RETURN_IF_ERROR(AppendSamples(&merged, p));
    }
  }
  return merged;
}

absl::Status RunXkv(Flags& f) {
  XkvProfilingOptions o;
  ASSIGN_OR_RETURN(o.window, f.Num<uint32_t>("window", o.window));
  ASSIGN_OR_RETURN(o.kernel, f.Num<uint32_t>("kernel", o.kernel));
  ASSIGN_OR_RETURN(int pool, f.Num<int>("pool_gqa", 1));
  o.pool_gqa = pool != 0;
  ASSIGN_OR_RETURN(std::string traces, f.Str("trace"));
  ASSIGN_OR_RETURN(std::string out, f.Str("out"));
  RETURN_IF_ERROR(f.CheckAllUsed());
  const auto start = std::chrono::steady_clock::now();
  ASSIGN_OR_RETURN(XkvProfile p,
                   (ProfileTraces<XkvProfile>(traces, o, ProfileXkv)));
  std::fprintf(stderr, "xkv profile: %zu samples in %.3f s\n", p.samples.size(),
               SecondsSince(start));
  return WriteXkvProfile(out, p);
}

absl::Status RunLukv(Flags& f) {
  LukvProfilingOptions o;
  ASSIGN_OR_RETURN(o.n_sink, f.Num<uint32_t>("sinks", o.n_sink));
  ASSIGN_OR_RETURN(o.window, f.Num<uint32_t>("window", o.window));
  ASSIGN_OR_RETURN(o.kernel, f.Num<uint32_t>("kernel", o.kernel));
  ASSIGN_OR_RETURN(std::string traces, f.Str("trace"));
  ASSIGN_OR_RETURN(std::string out, f.Str("out"));
  RETURN_IF_ERROR(f.CheckAllUsed());
  const auto start = std::chrono::steady_clock::now();
  ASSIGN_OR_RETURN(LukvProfile p,
                   (ProfileTraces<LukvProfile>(traces, o, ProfileLukv)));
  std::fprintf(stderr, "lukv profile: %zu samples in %.3f s\n",
               p.samples.size(), SecondsSince(start));
  return WriteLukvProfile(out, p);
}

absl::Status RunLukvTable(Flags& f) {
  LukvSolverOptions o;
  ASSIGN_OR_RETURN(o.floor_fraction, f.Num<double>("floor", o.floor_fraction));
  ASSIGN_OR_RETURN(std::string in, f.Str("profile"));
  ASSIGN_OR_RETURN(std::string out, f.Str("out"));
  RETURN_IF_ERROR(f.CheckAllUsed());
  ASSIGN_OR_RETURN(LukvProfile p, ReadLukvProfile(in));
  const auto start = std::chrono::steady_clock::now();
  ASSIGN_OR_RETURN(LukvTable t, BuildLukvTable(p, o));
  std::fprintf(stderr, "lukv table: %u x %u units in %.3f s\n", t.n_layers,
               t.n_kv_heads, SecondsSince(start));
  return WriteLukvTable(out, t);
}

void Print(const BudgetAllocation& a) {
  for (int32_t l = 0; l < a.n_layers; ++l) {
    if (a.granularity == BudgetGranularity::kPerLayer) {
      std::printf("layer %d %lld\n", l,
                  static_cast<long long>(a.LayerBudget(l)));
      continue;
    }
    for (int32_t h = 0; h < a.n_kv_heads; ++h) {
      std::printf("layer %d head %d %lld\n", l, h,
                  static_cast<long long>(a.HeadBudget(l, h)));
    }
  }
  std::printf("total %lld\n", static_cast<long long>(a.Total()));
}

absl::Status RunAllocate(Flags& f) {
  BudgetRequest r;
  ASSIGN_OR_RETURN(r.n_layers, f.Num<int32_t>("layers", 0));
  ASSIGN_OR_RETURN(r.n_kv_heads, f.Num<int32_t>("kv_heads", 0));
  ASSIGN_OR_RETURN(r.context, f.Num<int64_t>("context", 0));
  BudgetAllocation a;
  if (f.Has("xkv")) {
    XkvOptions o;
    ASSIGN_OR_RETURN(o.tokens_per_unit,
                     f.Num<int64_t>("tokens_per_unit", o.tokens_per_unit));
    ASSIGN_OR_RETURN(o.min_per_layer,
                     f.Num<int64_t>("min_per_layer", o.min_per_layer));
    ASSIGN_OR_RETURN(std::string path, f.Str("xkv"));
    ASSIGN_OR_RETURN(XkvProfile p, ReadXkvProfile(path));
    ASSIGN_OR_RETURN(XkvAllocator xkv, XkvAllocator::Create(p, o));
    if (f.Has("retention")) {
      ASSIGN_OR_RETURN(double target, f.Num<double>("retention", 0));
      RETURN_IF_ERROR(f.CheckAllUsed());
      ASSIGN_OR_RETURN(a, xkv.AllocateForRetention(target, r.n_kv_heads));
    } else {
      ASSIGN_OR_RETURN(r.total, f.Num<int64_t>("total", 0));
      RETURN_IF_ERROR(f.CheckAllUsed());
      ASSIGN_OR_RETURN(a, xkv.Allocate(r));
    }
  } else if (f.Has("lukv_table")) {
    ASSIGN_OR_RETURN(r.total, f.Num<int64_t>("total", 0));
    ASSIGN_OR_RETURN(std::string path, f.Str("lukv_table"));
    RETURN_IF_ERROR(f.CheckAllUsed());
    ASSIGN_OR_RETURN(LukvTable t, ReadLukvTable(path));
    ASSIGN_OR_RETURN(LukvAllocator lukv, LukvAllocator::Create(std::move(t)));
    ASSIGN_OR_RETURN(a, lukv.Allocate(r));
  } else if (f.Has("uniform")) {
    ASSIGN_OR_RETURN(r.total, f.Num<int64_t>("total", 0));
    ASSIGN_OR_RETURN(std::string unused, f.Str("uniform"));
    RETURN_IF_ERROR(f.CheckAllUsed());
    ASSIGN_OR_RETURN(a, UniformAllocator().Allocate(r));
  } else {
    return absl::InvalidArgumentError(
        "allocate needs one of --xkv, --lukv_table or --uniform");
  }
  Print(a);
  return absl::OkStatus();
}

}  // namespace
}  // namespace kvtier

namespace {

constexpr char kUsage[] =
    "usage:\n"
    "  kvtier-profile xkv --trace=a.kvt[,b.kvt...] --out=xkv.prof\n"
    "      [--window=8] [--kernel=7] [--pool_gqa=1]\n"
    "  kvtier-profile lukv --trace=a.kvt[,b.kvt...] --out=lukv.prof\n"
    "      [--sinks=4] [--window=32] [--kernel=5]\n"
    "  kvtier-profile lukv-table --profile=lukv.prof --out=lukv.table [--floor=0.01]\n"
    "  kvtier-profile allocate --layers=L --kv_heads=H --total=N\n"
    "      (--xkv=xkv.prof [--tokens_per_unit=1] [--min_per_layer=0]\n"
    "       | --xkv=xkv.prof --retention=0.9\n"
    "       | --lukv_table=lukv.table --context=C\n"
    "       | --uniform)\n"
    "allocate prints one line per layer (\"layer <l> <budget>\" or\n"
    "\"layer <l> head <h> <budget>\").\n";

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fputs(kUsage, stderr);
    return 2;
  }
  const std::string first = argv[1];
  if (first == "--help" || first == "-h" || first == "help") {
    std::fputs(kUsage, stdout);
    return 0;
  }
  kvtier::Flags flags;
  absl::Status status = flags.Parse(argc, argv);
  const std::string cmd = argv[1];
  if (status.ok()) {
    if (cmd == "xkv") {
      status = kvtier::RunXkv(flags);
    } else if (cmd == "lukv") {
      status = kvtier::RunLukv(flags);
    } else if (cmd == "lukv-table") {
      status = kvtier::RunLukvTable(flags);
    } else if (cmd == "allocate") {
      status = kvtier::RunAllocate(flags);
    } else {
      status = absl::InvalidArgumentError("unknown command " + cmd);
    }
  }
  if (!status.ok()) {
    std::fprintf(stderr, "kvtier-profile: %s\n", status.ToString().c_str());
    return 1;
  }
  return 0;
}
