// kvtierctl: the admin and smoke-test CLI of a kvtier store.
//
//   kvtierctl [--target HOST:PORT] stats
//   kvtierctl lookup (--tokens 1,2,3,... | --text FILE) [layout flags] [--layers N]
//   kvtierctl put-file FILE [--manifest PATH]     store FILE as pages, print keys
//   kvtierctl get-file OUT --manifest PATH        fetch them back, verify, write OUT
//   kvtierctl demo [--prompt_tokens N] [--layers L] a short visible session
//   kvtierctl members                             the cluster's member view
//   kvtierctl cluster-put|cluster-get (--tokens .. | --text FILE)  through the cluster
//   kvtierctl route (--tokens .. | --text FILE)   which members hold the prompt's prefix
//   kvtierctl events [--layer L] [--follow_s S]   the target's cache event stream
//   kvtierctl pin (--tokens .. | --text FILE) / unpin PIN_ID / drain / bench
//
// The cluster commands live in kvtierctl_cluster.cc, pin, unpin and bench
// in kvtierctl_pages.cc.
//
// Keys follow common/page_key.h. A text file is tokenized as one token per
// byte (enough to compute reproducible chains without a model). Exit status
// 0 on success, 1 on a failed call or check, 2 on a usage error.

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/random/random.h"
#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/store_client.h"
#include "client/security_flags.h"
#include "common/checksum.h"
#include "common/page_key.h"
#include "common/page_layout.h"
#include "common/status_macros.h"
#include "common/tool_usage.h"
#include "ops/kvtierctl.h"

ABSL_FLAG(std::string, target, "127.0.0.1:50051", "Store address host:port");
ABSL_FLAG(int64_t, deadline_ms, 30000, "Deadline of each RPC, ms");
ABSL_FLAG(uint32_t, batch_pages, 64,
          "Most pages per RPC; small batches keep a put within a small RAM tier");
ABSL_FLAG(std::string, tenant, "default", "Tenant salt of the key chain");
ABSL_FLAG(std::string, model, "demo-model", "Model fingerprint of the key chain");
ABSL_FLAG(uint32_t, page_size, 16, "Tokens per page");
ABSL_FLAG(uint32_t, n_kv_heads, 8, "KV heads per page");
ABSL_FLAG(uint32_t, head_dim, 128, "Head dimension");
ABSL_FLAG(std::string, dtype, "bf16", "f32, f16, bf16, fp8_e4m3 or int8");
ABSL_FLAG(uint32_t, layers, 4, "Layers per page position (lookup, demo)");
ABSL_FLAG(std::string, tokens, "", "lookup: comma-separated token ids");
ABSL_FLAG(std::string, text, "", "lookup: a text file, one token per byte");
ABSL_FLAG(std::string, manifest, "", "put-file/get-file: manifest path (default FILE.manifest)");
ABSL_FLAG(uint32_t, prompt_tokens, 2048, "demo: tokens of the synthetic prompt");
ABSL_FLAG(uint32_t, replicas, 2, "cluster-put/get: copies of each page");
ABSL_FLAG(uint32_t, write_quorum, 2, "cluster-put: copies stored before a put succeeds");
ABSL_FLAG(uint64_t, pin_ttl_ms, 0, "cluster-put: also pin the pages on their owners this long");
ABSL_FLAG(int32_t, layer, -1, "events: only this layer (-1: every layer); route: default 0");
ABSL_FLAG(uint32_t, follow_s, 0, "events: keep printing events this many seconds");
ABSL_FLAG(uint32_t, wait_s, 60, "drain: seconds to wait for the hand-off");
ABSL_FLAG(uint32_t, bench_ops, 64, "bench: batches put and read back");
ABSL_FLAG(uint64_t, seed, 1, "demo: seed of the synthetic prompt (same seed, same keys)");

namespace kvtier::ops {

std::string HumanBytes(double bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (bytes >= 1024 && u < 4) {
    bytes /= 1024;
    ++u;
  }
  return absl::StrFormat("%.1f %s", bytes, units[u]);
}

absl::StatusOr<PageLayout> LayoutFromFlags() {
  PageLayout layout{.page_size = absl::GetFlag(FLAGS_page_size),
                    .n_kv_heads = absl::GetFlag(FLAGS_n_kv_heads),
                    .head_dim = absl::GetFlag(FLAGS_head_dim)};
  const std::string dtype = absl::GetFlag(FLAGS_dtype);
  bool found = false;
  for (DType d : {DType::kF32, DType::kF16, DType::kBF16, DType::kFp8E4M3, DType::kInt8}) {
    if (dtype == DTypeName(d)) {
      layout.dtype = d;
      found = true;
    }
  }
  if (!found) return absl::InvalidArgumentError(absl::StrCat("--dtype: unknown \"", dtype, "\""));
  RETURN_IF_ERROR(layout.Validate());
  return layout;
}

Hash128 SeedFromFlags(const PageLayout& layout) {
  return KeyChain::Seed(absl::GetFlag(FLAGS_tenant), absl::GetFlag(FLAGS_model), layout);
}

absl::StatusOr<std::unique_ptr<client::StoreClient>> ConnectFromFlags() {
  client::ClientOptions options;
  client::ApplySecurityFlags(&options);
  options.deadline_ms = absl::GetFlag(FLAGS_deadline_ms);
  options.max_batch_pages = absl::GetFlag(FLAGS_batch_pages);
  return client::StoreClient::Connect(absl::GetFlag(FLAGS_target), options);
}

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", path));
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

namespace {

void PrintTierStats(const char* name, const v1::TierStats& t) {
  std::printf("  %-5s pages %-10llu used %-12s of %-12s (high %s, low %s)  hits %llu  "
              "evictions %llu  pinned %llu\n",
              name, static_cast<unsigned long long>(t.pages()),
              HumanBytes(t.used_bytes()).c_str(), HumanBytes(t.capacity_bytes()).c_str(),
              HumanBytes(t.high_watermark_bytes()).c_str(),
              HumanBytes(t.low_watermark_bytes()).c_str(),
              static_cast<unsigned long long>(t.hits()),
              static_cast<unsigned long long>(t.evictions()),
              static_cast<unsigned long long>(t.pinned_pages()));
}

// "12.0 KiB of 64.0 KiB", or "of no quota" for a quota of 0.
std::string BytesOfQuota(uint64_t bytes, uint64_t quota) {
  return absl::StrCat(HumanBytes(bytes), " of ", quota == 0 ? "no quota" : HumanBytes(quota));
}

void PrintTenantStats(const v1::TenantStats& t) {
  const std::string max_pins = t.max_pins() == 0 ? "no quota" : absl::StrCat(t.max_pins());
  std::printf("  tenant %s: ram %s (%llu pages)  disk %s (%llu pages)  pins %llu of %s  "
              "pinned %s  quota refusals %llu\n",
              t.tenant().c_str(), BytesOfQuota(t.ram_bytes(), t.max_ram_bytes()).c_str(),
              static_cast<unsigned long long>(t.ram_pages()),
              BytesOfQuota(t.disk_bytes(), t.max_disk_bytes()).c_str(),
              static_cast<unsigned long long>(t.disk_pages()),
              static_cast<unsigned long long>(t.pins()),
              max_pins.c_str(),
              BytesOfQuota(t.pinned_bytes(), t.max_pinned_bytes()).c_str(),
              static_cast<unsigned long long>(t.quota_refusals()));
}

absl::Status PrintStats(client::StoreClient& client) {
  ASSIGN_OR_RETURN(v1::StatsResponse s, client.Stats());
  std::printf("store %s\n", absl::GetFlag(FLAGS_target).c_str());
  PrintTierStats("ram", s.ram());
  PrintTierStats("disk", s.disk());
  std::printf("  puts %llu (duplicates %llu)  lookups %llu  get misses %llu  lost %llu\n",
              static_cast<unsigned long long>(s.put_pages()),
              static_cast<unsigned long long>(s.put_duplicate_pages()),
              static_cast<unsigned long long>(s.lookups()),
              static_cast<unsigned long long>(s.get_misses()),
              static_cast<unsigned long long>(s.lost_pages()));
  std::printf("  demotions %llu  promotions %llu  dropped %llu  active pins %llu  "
              "reserved %s  quarantined %s\n",
              static_cast<unsigned long long>(s.demotions()),
              static_cast<unsigned long long>(s.promotions()),
              static_cast<unsigned long long>(s.dropped_pages()),
              static_cast<unsigned long long>(s.active_pins()),
              HumanBytes(s.reserved_bytes()).c_str(),
              HumanBytes(s.quarantined_bytes()).c_str());
  std::printf("  data directory %s of its bound %s  blob rewrites %llu  pages refused at the "
              "bound %llu\n",
              HumanBytes(s.data_dir_bytes()).c_str(), HumanBytes(s.data_dir_bound_bytes()).c_str(),
              static_cast<unsigned long long>(s.disk_garbage_collections()),
              static_cast<unsigned long long>(s.disk_space_refusals()));
  if (s.set_aside_files() > 0) {
    std::printf("  data directory was damaged: %llu files set aside in its quarantine/ folder\n",
                static_cast<unsigned long long>(s.set_aside_files()));
  }
  if (s.unverified_disk_pages() > 0) {
    std::printf("  verifying disk pages: %llu left\n",
                static_cast<unsigned long long>(s.unverified_disk_pages()));
  }
  for (const v1::TenantStats& t : s.tenants()) PrintTenantStats(t);
  // The cluster as this node sees it (a node outside one lists itself).
  if (absl::StatusOr<v1::MembersResponse> view = client.Members(); view.ok()) {
    std::map<std::string, int> by_state;
    std::string self_state = "unknown";
    for (const v1::Member& m : view->members()) {
      ++by_state[v1::MemberState_Name(m.state())];
      if (m.id() == view->self_id()) self_state = v1::MemberState_Name(m.state());
    }
    std::string states;
    for (const auto& [state, n] : by_state) absl::StrAppend(&states, " ", state, " ", n);
    std::printf("  cluster: node %s (%s) of %d members:%s; view revision %lld\n",
                view->self_id().c_str(), self_state.c_str(), view->members_size(), states.c_str(),
                static_cast<long long>(view->revision()));
  } else {
    std::printf("  cluster: no member view (%s)\n", view.status().ToString().c_str());
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::vector<uint32_t>> TokensFromFlags() {
  std::vector<uint32_t> tokens;
  if (const std::string list = absl::GetFlag(FLAGS_tokens); !list.empty()) {
    for (absl::string_view part : absl::StrSplit(list, ',', absl::SkipWhitespace())) {
      uint32_t t = 0;
      if (!absl::SimpleAtoi(part, &t)) {
        return absl::InvalidArgumentError(absl::StrCat("--tokens: \"", part, "\" is not a u32"));
      }
      tokens.push_back(t);
    }
  } else if (const std::string path = absl::GetFlag(FLAGS_text); !path.empty()) {
    ASSIGN_OR_RETURN(std::string text, ReadFile(path));
    for (unsigned char c : text) tokens.push_back(c);
  } else {
    return absl::InvalidArgumentError("lookup needs --tokens or --text");
  }
  return tokens;
}

namespace {

absl::Status Lookup(client::StoreClient& client) {
  ASSIGN_OR_RETURN(PageLayout layout, LayoutFromFlags());
  ASSIGN_OR_RETURN(std::vector<uint32_t> tokens, TokensFromFlags());
  const std::vector<Hash128> chain = KeyChain::Chain(SeedFromFlags(layout), tokens, layout.page_size);
  const uint32_t layers = std::max<uint32_t>(absl::GetFlag(FLAGS_layers), 1);
  std::printf("%zu tokens -> %zu full pages of %u tokens, %u layers\n", tokens.size(),
              chain.size(), layout.page_size, layers);
  if (chain.empty()) return absl::OkStatus();
  ASSIGN_OR_RETURN(client::LookupReply reply, client.Lookup(chain, 0, layers));
  std::printf("stored prefix: %u of %zu pages (%u tokens)\n", reply.prefix_pages, chain.size(),
              reply.prefix_pages * layout.page_size);
  for (size_t p = 0; p < chain.size(); ++p) {
    std::string row;
    for (uint32_t l = 0; l < layers; ++l) {
      const v1::Tier t = reply.tiers[p * layers + l];
      row += t == v1::TIER_RAM ? 'R' : t == v1::TIER_DISK ? 'D' : '.';
    }
    std::printf("  page %4zu  %s  %s\n", p, chain[p].ToHex().c_str(), row.c_str());
  }
  return absl::OkStatus();
}

std::string ManifestPath(const std::string& file) {
  const std::string m = absl::GetFlag(FLAGS_manifest);
  return m.empty() ? file + ".manifest" : m;
}

// A file as pages: tokens of page i are i * page_size + j and the page bytes
// enter the chain as `extra`, so equal files give equal keys.
absl::Status PutFile(client::StoreClient& client, const std::string& path) {
  ASSIGN_OR_RETURN(PageLayout layout, LayoutFromFlags());
  ASSIGN_OR_RETURN(std::string content, ReadFile(path));
  const size_t page_bytes = layout.PageBytes();
  const size_t n_pages = std::max<size_t>(1, (content.size() + page_bytes - 1) / page_bytes);
  std::string padded = content;
  padded.resize(n_pages * page_bytes, '\0');
  std::vector<client::PutPage> pages;
  std::ostringstream manifest;
  manifest << "size " << content.size() << " page_bytes " << page_bytes << " page_size "
           << layout.page_size << " n_kv_heads " << layout.n_kv_heads << " head_dim "
           << layout.head_dim << " dtype " << static_cast<int>(layout.dtype) << "\n";
  Hash128 h = SeedFromFlags(layout);
  std::vector<uint32_t> tokens(layout.page_size);
  for (size_t i = 0; i < n_pages; ++i) {
    for (uint32_t j = 0; j < layout.page_size; ++j) tokens[j] = i * layout.page_size + j;
    std::string_view bytes(padded.data() + i * page_bytes, page_bytes);
    h = KeyChain::Next(h, tokens, bytes);
    const PageKey key{.hash = h, .layer = 0};
    pages.push_back({.key = key, .layout = layout,
                     .data = {reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()}});
    manifest << h.ToHex() << " 0\n";
  }
  ASSIGN_OR_RETURN(std::vector<client::PutOutcome> out, client.BatchPut(pages));
  size_t present = 0;
  for (size_t i = 0; i < out.size(); ++i) {
    present += out[i].already_present;
    std::printf("%s layer 0 %s\n", pages[i].key.hash.ToHex().c_str(),
                out[i].already_present ? "already stored" : "stored");
  }
  std::ofstream m(ManifestPath(path), std::ios::trunc);
  m << manifest.str();
  if (!m.flush()) return absl::InternalError(absl::StrCat("cannot write ", ManifestPath(path)));
  std::printf("%s: %s in %zu pages of %s (%zu new, %zu already stored); manifest %s\n",
              path.c_str(), HumanBytes(content.size()).c_str(), n_pages,
              HumanBytes(page_bytes).c_str(), n_pages - present, present,
              ManifestPath(path).c_str());
  return absl::OkStatus();
}

absl::Status GetFile(client::StoreClient& client, const std::string& out_path) {
  const std::string manifest_path = absl::GetFlag(FLAGS_manifest);
  if (manifest_path.empty()) {
    return absl::InvalidArgumentError("get-file needs --manifest (written by put-file)");
  }
  ASSIGN_OR_RETURN(std::string manifest, ReadFile(manifest_path));
  std::vector<std::string> lines = absl::StrSplit(manifest, '\n', absl::SkipEmpty());
  uint64_t size = 0;
  uint64_t page_bytes = 0;
  std::vector<std::string> header = absl::StrSplit(lines.empty() ? "" : lines[0], ' ');
  if (header.size() < 4 || header[0] != "size" || !absl::SimpleAtoi(header[1], &size) ||
      !absl::SimpleAtoi(header[3], &page_bytes)) {
    return absl::InvalidArgumentError(absl::StrCat(manifest_path, ": malformed header"));
  }
  std::vector<PageKey> keys;
  for (size_t i = 1; i < lines.size(); ++i) {
    std::vector<std::string> f = absl::StrSplit(lines[i], ' ');
    const std::string raw = absl::HexStringToBytes(f[0]);
    ASSIGN_OR_RETURN(Hash128 h, Hash128::FromBytes(raw));
    uint32_t layer = 0;
    if (f.size() != 2 || !absl::SimpleAtoi(f[1], &layer)) {
      return absl::InvalidArgumentError(absl::StrCat(manifest_path, ":", i + 1, ": malformed"));
    }
    keys.push_back({.hash = h, .layer = layer});
  }
  ASSIGN_OR_RETURN(std::vector<client::GotPage> got, client.BatchGet(keys, page_bytes));
  std::string content;
  for (const client::GotPage& g : got) {
    if (g.status != v1::PAGE_STATUS_OK) {
      return absl::NotFoundError(absl::StrCat("page ", g.key.DebugString(), " is ",
                                              v1::PageStatus_Name(g.status)));
    }
    if (PageChecksum(g.data.data(), g.data.size()) != g.checksum) {
      return absl::DataLossError(absl::StrCat("page ", g.key.DebugString(), " fails its checksum"));
    }
    content += g.data;
  }
  if (content.size() < size) return absl::DataLossError("pages shorter than the file size");
  content.resize(size);
  std::ofstream out(out_path, std::ios::binary | std::ios::trunc);
  out << content;
  if (!out.flush()) return absl::InternalError(absl::StrCat("cannot write ", out_path));
  std::printf("%s: %s from %zu pages, checksums verified\n", out_path.c_str(),
              HumanBytes(size).c_str(), keys.size());
  return absl::OkStatus();
}

}  // namespace

// Bytes of one synthetic page, a function of its key.
std::string DemoPageBytes(const PageLayout& layout, const PageKey& key) {
  std::string bytes(layout.PageBytes(), '\0');
  uint64_t x = key.hash.lo ^ key.hash.hi ^ (uint64_t{key.layer} << 48);
  for (size_t i = 0; i + 8 <= bytes.size(); i += 8) {
    x = x * 6364136223846793005ULL + 1442695040888963407ULL;
    std::memcpy(&bytes[i], &x, 8);
  }
  return bytes;
}

namespace {

double Seconds(absl::Time start) { return absl::ToDoubleSeconds(absl::Now() - start); }

absl::Status DemoPut(client::StoreClient& client, const PageLayout& layout,
                     const std::vector<PageKey>& keys, const std::vector<std::string>& bytes) {
  std::vector<client::PutPage> puts;
  for (size_t i = 0; i < keys.size(); ++i) {
    puts.push_back({.key = keys[i], .layout = layout,
                    .data = {reinterpret_cast<const uint8_t*>(bytes[i].data()), bytes[i].size()}});
  }
  const double total = static_cast<double>(keys.size()) * layout.PageBytes();
  const absl::Time start = absl::Now();
  ASSIGN_OR_RETURN(std::vector<client::PutOutcome> put, client.BatchPut(puts));
  const double secs = Seconds(start);
  size_t present = 0;
  for (const client::PutOutcome& o : put) present += o.already_present;
  std::printf("[3] put %zu pages (%s) in %.3f s, %.2f GB/s; %zu already stored\n", keys.size(),
              HumanBytes(total).c_str(), secs, total / secs / 1e9, present);
  return absl::OkStatus();
}

absl::Status DemoGetAndVerify(client::StoreClient& client, const PageLayout& layout,
                              const std::vector<PageKey>& keys,
                              const std::vector<std::string>& bytes) {
  const double total = static_cast<double>(keys.size()) * layout.PageBytes();
  const absl::Time start = absl::Now();
  ASSIGN_OR_RETURN(std::vector<client::GotPage> got, client.BatchGet(keys, layout.PageBytes()));
  const double secs = Seconds(start);
  size_t bad = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    if (got[i].status != v1::PAGE_STATUS_OK || got[i].data != bytes[i] ||
        PageChecksum(got[i].data.data(), got[i].data.size()) != got[i].checksum) {
      ++bad;
    }
  }
  std::printf("[6] got %zu pages back in %.3f s, %.2f GB/s; %zu mismatches\n", got.size(), secs,
              total / secs / 1e9, bad);
  if (bad != 0) return absl::DataLossError(absl::StrCat(bad, " pages did not come back intact"));
  return absl::OkStatus();
}

absl::Status Demo(client::StoreClient& client) {
  ASSIGN_OR_RETURN(PageLayout layout, LayoutFromFlags());
  const uint32_t layers = std::max<uint32_t>(absl::GetFlag(FLAGS_layers), 1);
  const uint32_t n_tokens = absl::GetFlag(FLAGS_prompt_tokens);
  std::printf("== kvtier demo against %s\n", absl::GetFlag(FLAGS_target).c_str());
  std::printf("layout %s, %u layers\n", layout.DebugString().c_str(), layers);

  // 1. A synthetic prompt and its key chain.
  std::mt19937_64 gen(absl::GetFlag(FLAGS_seed));
  std::vector<uint32_t> prompt(n_tokens);
  for (uint32_t& t : prompt) t = absl::Uniform<uint32_t>(gen, 0, 32000);
  const Hash128 seed = SeedFromFlags(layout);
  const std::vector<Hash128> chain = KeyChain::Chain(seed, prompt, layout.page_size);
  if (chain.empty()) return absl::InvalidArgumentError("--prompt_tokens is less than one page");
  std::printf("[1] prompt of %u synthetic tokens -> %zu pages; h_0 %s ... h_%zu %s\n", n_tokens,
              chain.size(), chain.front().ToHex().c_str(), chain.size() - 1,
              chain.back().ToHex().c_str());

  ASSIGN_OR_RETURN(client::LookupReply before, client.Lookup(chain, 0, layers));
  std::printf("[2] lookup before storing: prefix %u pages\n", before.prefix_pages);

  // 2. Store every (page, layer).
  std::vector<PageKey> keys;
  std::vector<std::string> bytes;
  for (const Hash128& h : chain) {
    for (uint32_t l = 0; l < layers; ++l) {
      keys.push_back({.hash = h, .layer = l});
      bytes.push_back(DemoPageBytes(layout, keys.back()));
    }
  }
  RETURN_IF_ERROR(DemoPut(client, layout, keys, bytes));

  // 3. The prefix is found, and a second prompt sharing half of it reuses it.
  ASSIGN_OR_RETURN(client::LookupReply after, client.Lookup(chain, 0, layers));
  size_t in_ram = 0, on_disk = 0;
  for (v1::Tier t : after.tiers) {
    in_ram += t == v1::TIER_RAM;
    on_disk += t == v1::TIER_DISK;
  }
  std::printf("[4] lookup after storing: prefix %u of %zu pages (%zu page-layers in RAM, %zu on "
              "disk only)\n", after.prefix_pages, chain.size(), in_ram, on_disk);
  std::vector<uint32_t> second(prompt.begin(), prompt.begin() + prompt.size() / 2);
  while (second.size() < prompt.size()) second.push_back(absl::Uniform<uint32_t>(gen, 0, 32000));
  const std::vector<Hash128> chain2 = KeyChain::Chain(seed, second, layout.page_size);
  ASSIGN_OR_RETURN(client::LookupReply shared, client.Lookup(chain2, 0, layers));
  std::printf("[5] a second prompt sharing the first %zu tokens: reusable prefix %u pages\n",
              prompt.size() / 2, shared.prefix_pages);

  // 4. Get everything back and verify.
  RETURN_IF_ERROR(DemoGetAndVerify(client, layout, keys, bytes));

  // 5. Pins keep pages from being deleted.
  const size_t n_pin = std::min<size_t>(keys.size(), 16);
  ASSIGN_OR_RETURN(const std::string pin, client.Pin({keys.data(), n_pin}, 60'000));
  absl::Status refused = client.Delete({keys.data(), n_pin}).status();
  std::printf("[7] pinned %zu pages (pin %s); delete without force -> %s\n", n_pin,
              absl::BytesToHexString(pin).c_str(), refused.ToString().c_str());
  if (!absl::IsFailedPrecondition(refused)) {
    return absl::InternalError(absl::StrCat("deleting pinned pages answered ", refused.ToString()));
  }
  RETURN_IF_ERROR(client.Unpin(pin));
  std::printf("    unpinned\n");
  std::printf("[8] ");
  absl::Status stats = PrintStats(client);
  if (absl::IsPermissionDenied(stats)) {
    // A tenant's session ends here: the store's counters are an admin's.
    std::printf("store stats need the admin role; done\n");
    return absl::OkStatus();
  }
  return stats;
}

int Main(const std::vector<char*>& args) {
  auto usage = [] {
    std::fprintf(stderr, "%s\n", absl::ProgramUsageMessage().data());
    return 2;
  };
  if (args.size() < 2) return usage();
  const std::string command = args[1];
  // Commands that reach no server.
  if ((command == "new-token" && args.size() == 4) || (command == "hash-token" && args.size() == 2)) {
    const absl::Status status =
        command == "new-token" ? NewToken(args[2], args[3]) : HashTokenFromStdin();
    if (!status.ok()) {
      std::fprintf(stderr, "kvtierctl %s: %s\n", command.c_str(), status.ToString().c_str());
      return absl::IsInvalidArgument(status) ? 2 : 1;
    }
    return 0;
  }
  absl::StatusOr<std::unique_ptr<client::StoreClient>> client = ConnectFromFlags();
  if (!client.ok()) {
    std::fprintf(stderr, "kvtierctl: %s\n", client.status().ToString().c_str());
    return 2;
  }
  absl::Status status;
  if (command == "stats" && args.size() == 2) {
    status = PrintStats(**client);
  } else if (command == "lookup" && args.size() == 2) {
    status = Lookup(**client);
  } else if (command == "put-file" && args.size() == 3) {
    status = PutFile(**client, args[2]);
  } else if (command == "get-file" && args.size() == 3) {
    status = GetFile(**client, args[2]);
  } else if (command == "demo" && args.size() == 2) {
    status = Demo(**client);
  } else if (command == "members" && args.size() == 2) {
    status = PrintMembers(**client);
  } else if (command == "cluster-put" && args.size() == 2) {
    status = ClusterPut();
  } else if (command == "cluster-get" && args.size() == 2) {
    status = ClusterGet();
  } else if (command == "route" && args.size() == 2) {
    status = Route();
  } else if (command == "events" && args.size() == 2) {
    status = PrintEvents(**client);
  } else if (command == "drain" && args.size() == 2) {
    status = DrainTarget(**client);
  } else if (command == "pin" && args.size() == 2) {
    status = PinPrompt(**client);
  } else if (command == "unpin" && args.size() == 3) {
    status = UnpinById(**client, args[2]);
  } else if (command == "bench" && args.size() == 2) {
    status = Bench(**client);
  } else {
    return usage();
  }
  if (!status.ok()) {
    std::fprintf(stderr, "kvtierctl %s: %s\n", command.c_str(), status.ToString().c_str());
    return absl::IsInvalidArgument(status) ? 2 : 1;
  }
  return 0;
}

}  // namespace
}  // namespace kvtier::ops

int main(int argc, char** argv) {
  kvtier::SetToolUsage(
      "usage: kvtierctl [--target HOST:PORT] COMMAND\n"
      "  stats                                 store counters and tiers\n"
      "  lookup --tokens 1,2,.. | --text FILE  stored prefix and tiers of a prompt\n"
      "  put-file FILE [--manifest PATH]       store FILE as pages, print keys\n"
      "  get-file OUT --manifest PATH          fetch, verify and write the pages\n"
      "  demo [--prompt_tokens N] [--layers L] a short visible session\n"
      "  members                               the cluster's members as the target sees them\n"
      "  cluster-put --tokens .. | --text FILE store a prompt's pages on their owners\n"
      "            [--pin_ttl_ms MS]           and pin them there\n"
      "  cluster-get --tokens .. | --text FILE its longest stored prefix anywhere, where it\n"
      "                                        lives, and its bytes fetched and verified\n"
      "  route --tokens .. | --text FILE       which members hold how much of a prompt, from\n"
      "                                        their cache event streams (--layer, default 0)\n"
      "  events [--layer L] [--follow_s S]     the target's pages of this tenant, then what it\n"
      "                                        stores and removes for S seconds\n"
      "  pin --tokens .. | --text FILE         pin a prompt's pages (--layers, --pin_ttl_ms,\n"
      "                                        default 10 min); prints the pin id\n"
      "  unpin PIN_ID                          release a pin\n"
      "  drain [--wait_s 60]                   (admin) hand the target's pages to their new\n"
      "                                        owners; exit 1 if not done within wait_s\n"
      "  bench [--bench_ops N] [--batch_pages B] put, read back and verify N batches\n"
      "  new-token TENANT OUT [--role R] [--shared S]\n"
      "                                        write a new token to OUT (mode 0600) and print\n"
      "                                        the access-file line that admits it\n"
      "  hash-token                            the access-file hash of the token on stdin\n"
      "Credentials: --token_file FILE, or mTLS (--tls_cert_file, --tls_key_file).");
  return kvtier::ops::Main(absl::ParseCommandLine(argc, argv));
}
