// Writes the seed corpora of the fuzz targets (committed under
// fuzz/corpus/<target>/): small valid inputs of each format, from which
// libFuzzer's mutations reach past the first checks.
//
//   build-checked/fuzz/fuzz_make_seeds fuzz/corpus
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/checksum.h"
#include "common/page_key.h"
#include "common/page_layout.h"
#include "kvtier/v1/convert.h"
#include "kvtier/v1/store.pb.h"
#include "worker/budget/profile.h"
#include "worker/model/loader/gguf_test_writer.h"
#include "worker/trace/trace.h"
#include "worker/trace/trace_gen.h"
#include "worker/trace/trace_profiler.h"

namespace kvtier {
namespace {

std::filesystem::path root;

void Write(const std::string& target, const std::string& name, const std::string& bytes) {
  const std::filesystem::path dir = root / target;
  std::filesystem::create_directories(dir);
  std::ofstream out(dir / name, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

PageLayout Layout() {
  return PageLayout{.page_size = 4, .n_kv_heads = 1, .head_dim = 8, .dtype = DType::kF16};
}

PageKey Key(uint64_t n) { return PageKey{.hash = {.hi = 0x5eed, .lo = n}, .layer = 1}; }

v1::PutPage WirePage(uint64_t n, bool with_bytes) {
  v1::PutPage page;
  v1::KeyToProto(Key(n), page.mutable_key());
  v1::LayoutToProto(Layout(), page.mutable_layout());
  const std::string bytes(Layout().PageBytes(), static_cast<char>(n));
  page.set_checksum(PageChecksum(bytes.data(), bytes.size()));
  if (with_bytes) page.set_inline_data(bytes);
  return page;
}

// service_fuzz: call byte, op byte, request.
void ServiceSeeds() {
  auto seed = [](int call, int op, const google::protobuf::Message& m, const std::string& name) {
    Write("service_fuzz", name,
          std::string(1, static_cast<char>(call)) + std::string(1, static_cast<char>(op)) +
              m.SerializeAsString());
  };
  v1::LookupRequest lookup;
  for (uint64_t i = 1; i <= 3; ++i) lookup.add_chain(Key(i).hash.CanonicalString());
  lookup.set_layer_count(2);
  seed(0, 0, lookup, "lookup");
  v1::BatchPutRequest put;
  *put.add_pages() = WirePage(1, true);
  *put.add_pages() = WirePage(2, true);
  seed(1, 0, put, "put");
  v1::BatchGetRequest get;
  v1::KeyToProto(Key(1), get.add_keys());
  v1::KeyToProto(Key(3), get.add_keys());
  seed(2, 0, get, "get");
  v1::BatchGetRequest arena_get = get;
  arena_get.set_arena_session_id("\x01");  // the open session
  seed(2, 0, arena_get, "arena_get");
  v1::DeleteRequest del;
  v1::KeyToProto(Key(2), del.add_keys());
  seed(3, 0, del, "delete");
  v1::PinRequest pin;
  v1::KeyToProto(Key(1), pin.add_keys());
  pin.set_ttl_ms(1000);
  seed(4, 0, pin, "pin");
  v1::UnpinRequest unpin;
  unpin.set_pin_id(std::string(16, '\x01'));
  seed(5, 0, unpin, "unpin");
  v1::StatsRequest stats;
  seed(6, 0, stats, "stats");
  v1::ReservePutRequest reserve;
  reserve.set_session_id("\x01");
  *reserve.add_pages() = WirePage(5, false);
  seed(9, 0, reserve, "reserve");
  v1::CommitPutRequest commit;
  commit.set_session_id("\x01");
  commit.set_transfer_id(uint64_t{1} << 32);
  seed(10, 0, commit, "commit");
  v1::AbortPutRequest abort;
  abort.set_session_id("\x01");
  abort.set_transfer_id(uint64_t{1} << 32);
  seed(11, 0, abort, "abort");
  // Request messages: mapped get, reserve, commit.
  seed(12, 1, arena_get, "message_get");
  seed(12, 2, reserve, "message_reserve");
  seed(12, 3, commit, "message_commit");
  // Local lanes: a put whose bytes lie in the segment, and a get.
  v1::BatchPutRequest lane_put;
  *lane_put.add_pages() = WirePage(6, false);
  lane_put.mutable_pages(0)->set_region_offset(4096);
  seed(14, 1, lane_put, "lane_put");
  seed(14, 2, get, "lane_get");
  // A node's copy of a pinned page into tenant 1.
  v1::ReplicaPutRequest replica;
  replica.set_tenant(1);
  *replica.add_pages() = WirePage(7, true);
  replica.add_pin_expiry_unix_ms(int64_t{1} << 42);
  seed(15, 0, replica, "replica_put");
}

void ConfigSeeds() {
  Write("config_fuzz", "empty", "");
  Write("config_fuzz", "full",
        "listen: \"0.0.0.0:7000\"\n"
        "data_dir: \"/tmp/kvtier\"\n"
        "ram { capacity_bytes: 4194304 policy: \"s3fifo\" high_watermark: 0.9 low_watermark: 0.8 }\n"
        "disk { capacity_bytes: 8388608 policy: \"lru\" }\n"
        "max_batch_pages: 8\nmax_lookup_pages: 16\nmax_lookup_entries: 64\n"
        "promote_after_reads: 2\nmax_pin_ttl_ms: 1000\nverify_on_open: true\n"
        "max_message_bytes: 8388608\nlog_level: \"debug\"\nmax_pins: 10\nucx: true\n"
        "ucx_transfer_timeout_ms: 100\nucx_max_sessions: 2\nprefault_ram: false\n"
        "ucx_transports: \"posix,cma,self\"\nucx_mutex_locks: false\n");
}

// access_fuzz: `@0`..`@3` stand for the hashes of the harness's tokens.
void AccessSeeds() {
  Write("access_fuzz", "every_key",
        "# tenant     role          credential      shared rights\n"
        "tenant=acme  role=tenant   token_sha256=@0  shared=read\n"
        "tenant=acme  role=tenant   token_sha256=sha256:@1  # rotation\n"
        "tenant=ops   role=admin    cert_cn=ops-client.example.com\n"
        "tenant=beta  role=tenant   token_sha256=@2  max_ram_bytes=1073741824 max_pins=7\n"
        "tenant=beta\trole=tenant\tcert_cn=beta.example max_disk_bytes=0 "
        "max_pinned_bytes=4096 shared=write\n"
        "tenant=prom  role=metrics  token_sha256=@3\n");
  Write("access_fuzz", "crlf", "tenant=a role=admin token_sha256=@0\r\n\r\n# end\r\n");
  // Refused: the same token twice.
  Write("access_fuzz", "duplicate_token",
        "tenant=a role=tenant token_sha256=@0\ntenant=b role=tenant token_sha256=@0\n");
  // Refused: quotas of one tenant that disagree.
  Write("access_fuzz", "quota_conflict",
        "tenant=a role=tenant token_sha256=@0 max_pins=1\n"
        "tenant=a role=tenant token_sha256=@1 max_pins=2\n");
}

void WireSeeds() {
  Write("wire_fuzz", "page", WirePage(7, true).SerializeAsString());
  Write("wire_fuzz", "key", Key(9).Encode());
}

// Length-prefixed CacheEventBatch messages: a snapshot in two batches,
// then live events.
void CacheEventSeeds() {
  auto batch = [](bool reset, bool done, uint64_t next_seq,
                  std::vector<std::pair<v1::CacheEvent::Kind, uint64_t>> events) {
    v1::CacheEventBatch b;
    b.set_node_id("n1");
    b.set_epoch(0xe90c);
    b.set_reset(reset);
    b.set_snapshot_done(done);
    b.set_next_seq(next_seq);
    for (const auto& [kind, n] : events) {
      v1::CacheEvent* e = b.add_events();
      e->set_kind(kind);
      v1::KeyToProto(Key(n), e->mutable_key());
    }
    const std::string bytes = b.SerializeAsString();
    return std::string{static_cast<char>(bytes.size() & 0xff),
                       static_cast<char>(bytes.size() >> 8)} + bytes;
  };
  const auto S = v1::CacheEvent::STORED;
  const auto R = v1::CacheEvent::REMOVED;
  Write("cache_event_fuzz", "snapshot_then_events",
        batch(true, false, 0, {{S, 1}, {S, 2}}) + batch(false, true, 7, {{S, 3}}) +
            batch(false, false, 9, {{R, 2}, {S, 4}}));
  Write("cache_event_fuzz", "reset_twice",
        batch(true, true, 3, {{S, 1}}) + batch(true, true, 5, {}));
}

void GgufSeeds() {
  // A tiny Llama: dim 8, one layer, two heads (one KV head), vocab 4.
  model::GgufTestWriter w;
  w.AddString("general.architecture", "llama");
  w.AddUint32("llama.embedding_length", 8);
  w.AddUint32("llama.feed_forward_length", 16);
  w.AddUint32("llama.block_count", 1);
  w.AddUint32("llama.attention.head_count", 2);
  w.AddUint32("llama.attention.head_count_kv", 1);
  w.AddUint32("llama.context_length", 16);
  w.AddFloat32("llama.attention.layer_norm_rms_epsilon", 1e-5f);
  w.AddFloat32("llama.rope.freq_base", 10000.0f);
  w.AddString("tokenizer.ggml.model", "llama");
  w.AddStringArray("tokenizer.ggml.tokens", {"<unk>", "<s>", "</s>", "\xE2\x96\x81" "a"});
  w.AddFloat32Array("tokenizer.ggml.scores", {0, 0, 0, -1});
  w.AddUint32("tokenizer.ggml.bos_token_id", 1);
  w.AddUint32("tokenizer.ggml.eos_token_id", 2);
  auto add = [&](const std::string& name, std::vector<uint64_t> dims) {
    uint64_t n = 1;
    for (uint64_t d : dims) n *= d;
    std::vector<float> values(n);
    for (uint64_t i = 0; i < n; ++i) values[i] = 0.01f * static_cast<float>(i % 7);
    w.AddF32Tensor(name, dims, values);
  };
  add("token_embd.weight", {8, 4});
  add("output_norm.weight", {8});
  add("blk.0.attn_norm.weight", {8});
  add("blk.0.attn_q.weight", {8, 8});
  add("blk.0.attn_k.weight", {8, 4});
  add("blk.0.attn_v.weight", {8, 4});
  add("blk.0.attn_output.weight", {8, 8});
  add("blk.0.ffn_norm.weight", {8});
  add("blk.0.ffn_gate.weight", {8, 16});
  add("blk.0.ffn_up.weight", {8, 16});
  add("blk.0.ffn_down.weight", {16, 8});
  Write("gguf_fuzz", "tiny_llama", w.Build());
  model::GgufTestWriter gpt2;
  gpt2.AddString("general.architecture", "llama");
  gpt2.AddString("tokenizer.ggml.model", "gpt2");
  gpt2.AddStringArray("tokenizer.ggml.tokens", {"a", "b", "ab"});
  gpt2.AddStringArray("tokenizer.ggml.merges", {"a b"});
  gpt2.AddF32Tensor("t", {2, 2}, {1, 2, 3, 4});
  Write("gguf_fuzz", "gpt2_vocab", gpt2.Build());
}

void Llama2cSeeds() {
  // dim 8, hidden 16, 1 layer, 2 heads, 1 KV head, vocab 4, 16 positions.
  const int32_t header[7] = {8, 16, 1, 2, 1, 4, 16};
  const uint64_t floats = 4 * 8 + (8 + 64 + 2 * 4 * 8 + 64 + 8 + 3 * 16 * 8) + 8 + 16 * 4;
  std::string bytes(sizeof(header) + floats * sizeof(float), '\0');
  std::memcpy(bytes.data(), header, sizeof(header));
  for (uint64_t i = 0; i < floats; ++i) {
    const float v = 0.01f * static_cast<float>(i % 11);
    std::memcpy(bytes.data() + sizeof(header) + i * sizeof(float), &v, sizeof(v));
  }
  // The first byte is the fuzzer's vocabulary-size byte.
  Write("llama2c_fuzz", "tiny_checkpoint", std::string(1, '\x03') + bytes);
  // A llama2.c tokenizer file of 4 tokens (vocabulary byte 3 -> 4).
  std::string tokenizer;
  auto u32 = [&](uint32_t v) { tokenizer.append(reinterpret_cast<const char*>(&v), 4); };
  auto f32 = [&](float v) { tokenizer.append(reinterpret_cast<const char*>(&v), 4); };
  u32(8);
  for (const std::string piece : {"<unk>", "<s>", "</s>", " a"}) {
    f32(-1.0f);
    u32(static_cast<uint32_t>(piece.size()));
    tokenizer += piece;
  }
  Write("llama2c_fuzz", "tokenizer", std::string(1, '\x03') + tokenizer);
}

void TraceAndProfileSeeds() {
  TraceGenOptions o;
  o.n_layers = 1;
  o.n_q_heads = 2;
  o.n_kv_heads = 1;
  o.head_dim = 8;
  o.n_rope_pairs = 1;
  o.prompt_len = 48;
  o.n_prompt_queries = 8;
  o.decode_steps = 2;
  o.n_sink_tokens = 2;
  o.local_window = 4;
  o.n_needles = 1;
  o.needle_margin = 8;
  const std::string trace_path = (root / "tiny.kvtrace").string();
  if (!GenerateTraceFile(o, trace_path).ok()) std::abort();
  Write("trace_fuzz", "tiny", ReadFile(trace_path));
  absl::StatusOr<TraceReader> reader = TraceReader::Open(trace_path);
  std::filesystem::remove(trace_path);
  if (!reader.ok()) std::abort();
  absl::StatusOr<XkvProfile> xkv = ProfileXkv(*reader, {.window = 4, .kernel = 3});
  absl::StatusOr<LukvProfile> lukv =
      ProfileLukv(*reader, {.n_sink = 2, .window = 4, .kernel = 3});
  if (!xkv.ok() || !lukv.ok()) std::abort();
  const std::string xkv_path = (root / "xkv.prof").string();
  const std::string lukv_path = (root / "lukv.prof").string();
  if (!WriteXkvProfile(xkv_path, *xkv).ok() || !WriteLukvProfile(lukv_path, *lukv).ok()) {
    std::abort();
  }
  Write("profile_fuzz", "xkv", ReadFile(xkv_path));
  Write("profile_fuzz", "lukv", ReadFile(lukv_path));
  std::filesystem::remove(xkv_path);
  std::filesystem::remove(lukv_path);
  LukvTable table;
  table.n_layers = 1;
  table.n_kv_heads = 1;
  for (int level = 1; level <= kLukvLevels; ++level) {
    table.prune.push_back({static_cast<double>(level) / 100.0});
  }
  const std::string table_path = (root / "lukv.table").string();
  if (!WriteLukvTable(table_path, table).ok()) std::abort();
  Write("profile_fuzz", "lukv_table", ReadFile(table_path));
  std::filesystem::remove(table_path);
}

}  // namespace
}  // namespace kvtier

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: fuzz_make_seeds CORPUS_DIR\n");
    return 2;
  }
  kvtier::root = argv[1];
  kvtier::ServiceSeeds();
  kvtier::ConfigSeeds();
  kvtier::AccessSeeds();
  kvtier::WireSeeds();
  kvtier::CacheEventSeeds();
  kvtier::GgufSeeds();
  kvtier::Llama2cSeeds();
  kvtier::TraceAndProfileSeeds();
  return 0;
}
