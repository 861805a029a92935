// kvtierctl's page commands for operators: pin, unpin and bench.
#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/random/random.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/status_macros.h"
#include "ops/kvtierctl.h"
#include "ops/percentile.h"

namespace kvtier::ops {

// pin: pins every (page, layer) of the prompt held by the target for
// --pin_ttl_ms (default 10 minutes); prints the pin id to unpin it with.
absl::Status PinPrompt(client::StoreClient& client) {
  ASSIGN_OR_RETURN(const PageLayout layout, LayoutFromFlags());
  ASSIGN_OR_RETURN(const std::vector<uint32_t> tokens, TokensFromFlags());
  const std::vector<Hash128> chain =
      KeyChain::Chain(SeedFromFlags(layout), tokens, layout.page_size);
  if (chain.empty()) return absl::InvalidArgumentError("the prompt is less than one page");
  const uint32_t layers = std::max<uint32_t>(absl::GetFlag(FLAGS_layers), 1);
  std::vector<PageKey> keys;
  for (const Hash128& h : chain) {
    for (uint32_t l = 0; l < layers; ++l) keys.push_back({.hash = h, .layer = l});
  }
  const uint64_t ttl_ms = absl::GetFlag(FLAGS_pin_ttl_ms) == 0 ? 600'000
                                                               : absl::GetFlag(FLAGS_pin_ttl_ms);
  ASSIGN_OR_RETURN(const std::string pin_id, client.Pin(keys, ttl_ms));
  std::printf("pinned %zu pages x %u layers for %llu ms\npin id %s\n", chain.size(), layers,
              static_cast<unsigned long long>(ttl_ms), absl::BytesToHexString(pin_id).c_str());
  return absl::OkStatus();
}

// unpin PIN_ID: the hex id `pin` printed.
absl::Status UnpinById(client::StoreClient& client, const std::string& hex) {
  if (hex.size() != 32 || hex.find_first_not_of("0123456789abcdefABCDEF") != std::string::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("pin id \"", hex, "\": 32 hex digits, as `kvtierctl pin` prints"));
  }
  RETURN_IF_ERROR(client.Unpin(absl::HexStringToBytes(hex)));
  std::printf("unpinned %s\n", hex.c_str());
  return absl::OkStatus();
}

// bench: --bench_ops batches of --batch_pages new pages of the layout put,
// then read back and compared, then deleted; one client, so it measures
// the path between this host and the target, not the store's peak.
absl::Status Bench(client::StoreClient& client) {
  ASSIGN_OR_RETURN(const PageLayout layout, LayoutFromFlags());
  const uint32_t batch = std::max<uint32_t>(absl::GetFlag(FLAGS_batch_pages), 1);
  const uint32_t ops = absl::GetFlag(FLAGS_bench_ops);
  if (ops == 0 || ops > 100'000) {
    return absl::InvalidArgumentError("--bench_ops: 1..100000 batches");
  }
  absl::BitGen gen;
  const uint64_t nonce = absl::Uniform<uint64_t>(gen);
  std::vector<PageKey> keys;
  std::vector<std::string> bytes;
  for (uint64_t i = 0; i < uint64_t{ops} * batch; ++i) {
    keys.push_back({.hash = {.hi = nonce, .lo = i}, .layer = 0});
    bytes.push_back(DemoPageBytes(layout, keys.back()));
  }
  std::vector<double> put_us;
  std::vector<double> get_us;
  absl::Duration put_time;
  absl::Duration get_time;
  absl::Status status;
  size_t mismatches = 0;
  for (uint32_t op = 0; op < ops && status.ok(); ++op) {
    std::vector<client::PutPage> pages;
    for (uint32_t i = 0; i < batch; ++i) {
      const size_t k = size_t{op} * batch + i;
      pages.push_back({.key = keys[k], .layout = layout,
                       .data = {reinterpret_cast<const uint8_t*>(bytes[k].data()),
                                bytes[k].size()}});
    }
    const absl::Time t0 = absl::Now();
    status = client.BatchPut(pages).status();
    put_time += absl::Now() - t0;
    put_us.push_back(absl::ToDoubleMicroseconds(absl::Now() - t0));
  }
  for (uint32_t op = 0; op < ops && status.ok(); ++op) {
    const absl::Time t0 = absl::Now();
    absl::StatusOr<std::vector<client::GotPage>> got =
        client.BatchGet({keys.data() + size_t{op} * batch, batch}, layout.PageBytes());
    get_time += absl::Now() - t0;
    get_us.push_back(absl::ToDoubleMicroseconds(absl::Now() - t0));
    status = got.status();
    for (uint32_t i = 0; got.ok() && i < batch; ++i) {
      mismatches += (*got)[i].status != v1::PAGE_STATUS_OK ||
                    (*got)[i].data != bytes[size_t{op} * batch + i];
    }
  }
  // Clean up whatever was stored, even after a failure.
  for (size_t i = 0; i < keys.size(); i += 1024) {
    client.Delete({keys.data() + i, std::min<size_t>(1024, keys.size() - i)}, true)
        .status()
        .IgnoreError();
  }
  RETURN_IF_ERROR(status);
  const double total = static_cast<double>(keys.size()) * static_cast<double>(layout.PageBytes());
  std::printf("%u batches of %u pages of %s through %s (one client)\n", ops, batch,
              HumanBytes(static_cast<double>(layout.PageBytes())).c_str(),
              absl::GetFlag(FLAGS_target).c_str());
  std::printf("  put %8.3f GB/s  p50 %8.0f us  p99 %8.0f us\n",
              total / absl::ToDoubleSeconds(put_time) / 1e9, Percentile(put_us, 0.5),
              Percentile(put_us, 0.99));
  std::printf("  get %8.3f GB/s  p50 %8.0f us  p99 %8.0f us  %zu pages wrong or missing\n",
              total / absl::ToDoubleSeconds(get_time) / 1e9, Percentile(get_us, 0.5),
              Percentile(get_us, 0.99), mismatches);
  if (mismatches > 0) return absl::DataLossError(absl::StrCat(mismatches, " pages came back wrong"));
  return absl::OkStatus();
}

}  // namespace kvtier::ops
