// kvtierctl's pieces shared between its files: the flags and helpers of
// kvtierctl.cc, the cluster commands of kvtierctl_cluster.cc, the page
// commands of kvtierctl_pages.cc and the credential commands of
// kvtierctl_tokens.cc.
#ifndef KVTIER_OPS_KVTIERCTL_H_
#define KVTIER_OPS_KVTIERCTL_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/flags/declare.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "client/store_client.h"
#include "common/page_key.h"
#include "common/page_layout.h"

ABSL_DECLARE_FLAG(std::string, target);
ABSL_DECLARE_FLAG(int64_t, deadline_ms);
ABSL_DECLARE_FLAG(uint32_t, batch_pages);
ABSL_DECLARE_FLAG(uint32_t, layers);
ABSL_DECLARE_FLAG(uint32_t, replicas);
ABSL_DECLARE_FLAG(uint32_t, write_quorum);
ABSL_DECLARE_FLAG(uint64_t, pin_ttl_ms);
ABSL_DECLARE_FLAG(int32_t, layer);
ABSL_DECLARE_FLAG(uint32_t, follow_s);
ABSL_DECLARE_FLAG(uint32_t, wait_s);
ABSL_DECLARE_FLAG(uint32_t, bench_ops);

namespace kvtier::ops {

// "12.0 KiB".
std::string HumanBytes(double bytes);
// The page layout of --page_size, --n_kv_heads, --head_dim, --dtype.
absl::StatusOr<PageLayout> LayoutFromFlags();
// The key chain's seed for --tenant and --model.
Hash128 SeedFromFlags(const PageLayout& layout);
absl::StatusOr<std::unique_ptr<client::StoreClient>> ConnectFromFlags();
absl::StatusOr<std::string> ReadFile(const std::string& path);
// --tokens, or --text read as one token per byte.
absl::StatusOr<std::vector<uint32_t>> TokensFromFlags();
// Bytes of one synthetic page, a function of its key.
std::string DemoPageBytes(const PageLayout& layout, const PageKey& key);

// kvtierctl_cluster.cc
absl::Status PrintMembers(client::StoreClient& client);
absl::Status ClusterPut();
absl::Status ClusterGet();
absl::Status Route();
absl::Status PrintEvents(client::StoreClient& client);
absl::Status DrainTarget(client::StoreClient& client);

// kvtierctl_tokens.cc
absl::Status NewToken(const std::string& tenant, const std::string& out_path);
absl::Status HashTokenFromStdin();

// kvtierctl_pages.cc
absl::Status PinPrompt(client::StoreClient& client);
absl::Status UnpinById(client::StoreClient& client, const std::string& hex);
absl::Status Bench(client::StoreClient& client);

}  // namespace kvtier::ops

#endif  // KVTIER_OPS_KVTIERCTL_H_
