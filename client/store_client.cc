#include "client/store_client.h"

#include <algorithm>
#include <chrono>
#include <fstream>
#include <memory>
#include <string>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/random/random.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/absl_cycle_clock.h"
#include "common/checksum.h"
#include "common/log.h"
#include "common/pem_file.h"
#include "common/small_file.h"
#include "common/status_macros.h"
#include "kvtier/v1/credentials.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/security/credentials.h"
#include "kvtier/v1/convert.h"

namespace kvtier::client {
namespace {

// Room left in every message for everything that is not page bytes.
constexpr uint64_t kMessageOverheadBytes = 64 << 10;
constexpr uint64_t kPerPageOverheadBytes = 128;

uint64_t PayloadBudget(const ClientOptions& o) {
  return o.max_message_bytes - kMessageOverheadBytes;
}

// [begin, end) ranges of at most max_pages entries and budget bytes each.
// sizes[i] is entry i's payload; REQUIRES every sizes[i] <= budget.
std::vector<std::pair<size_t, size_t>> Chunks(absl::Span<const uint64_t> sizes,
                                              uint32_t max_pages, uint64_t budget) {
  std::vector<std::pair<size_t, size_t>> out;
  size_t begin = 0;
  uint64_t bytes = 0;
  for (size_t i = 0; i < sizes.size(); ++i) {
    const uint64_t add = sizes[i] + kPerPageOverheadBytes;
    if (i > begin && (i - begin == max_pages || bytes + add > budget)) {
      out.emplace_back(begin, i);
      begin = i;
      bytes = 0;
    }
    bytes += add;
  }
  if (begin < sizes.size()) out.emplace_back(begin, sizes.size());
  return out;
}

// What servers accept as a token (kvtier/v1/credentials.h); checked here
// too so that a bad one fails at Connect, not at every call.
absl::Status CheckToken(absl::string_view token, absl::string_view what) {
  if (token.size() < wire::kMinTokenBytes || token.size() > wire::kMaxTokenBytes) {
    return absl::InvalidArgumentError(absl::StrFormat("%s: %d characters, need %d..%d", what,
                                                      token.size(), wire::kMinTokenBytes,
                                                      wire::kMaxTokenBytes));
  }
  for (const char c : token) {
    if (!wire::IsTokenByte(c)) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, ": only printable ASCII without spaces"));
    }
  }
  return absl::OkStatus();
}

// The first line of `path`, without its line ending.
absl::StatusOr<std::string> ReadTokenFile(const std::string& path) {
  // A token and its line ending, with room for a comment line or two.
  constexpr size_t kMaxTokenFileBytes = size_t{64} << 10;
  ASSIGN_OR_RETURN(const std::string text, ReadSmallFile(path, kMaxTokenFileBytes, "token_file"));
  std::string line = text.substr(0, text.find('\n'));
  if (!line.empty() && line.back() == '\r') line.pop_back();
  RETURN_IF_ERROR(CheckToken(line, absl::StrCat("token_file ", path)));
  return line;
}

}  // namespace

absl::Status ClientOptions::Validate() const {
  if (!token.empty() && !token_file.empty()) {
    return absl::InvalidArgumentError("token and token_file: give one");
  }
  if (!tls && !(tls_ca_file.empty() && tls_cert_file.empty() && tls_key_file.empty() &&
                tls_server_name.empty())) {
    return absl::InvalidArgumentError("tls_ca_file, tls_cert_file, tls_key_file and "
                                      "tls_server_name need tls");
  }
  if (tls_cert_file.empty() != tls_key_file.empty()) {
    return absl::InvalidArgumentError("tls_cert_file and tls_key_file go together");
  }
  if (deadline_ms <= 0) {
    return absl::InvalidArgumentError(absl::StrFormat("deadline_ms %d must be > 0", deadline_ms));
  }
  if (max_batch_pages == 0) return absl::InvalidArgumentError("max_batch_pages must be > 0");
  if (max_message_bytes < (uint64_t{1} << 20) || max_message_bytes > (uint64_t{2} << 30) - 1) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "max_message_bytes %d out of range [1 MiB, 2 GiB - 1]", max_message_bytes));
  }
  if (max_attempts < 1 || max_attempts > 100) {
    return absl::InvalidArgumentError(
        absl::StrFormat("max_attempts %d out of range [1, 100]", max_attempts));
  }
  if (initial_backoff_ms <= 0 || max_backoff_ms < initial_backoff_ms) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "backoff: need 0 < initial_backoff_ms (%d) <= max_backoff_ms (%d)", initial_backoff_ms,
        max_backoff_ms));
  }
  if (!(backoff_multiplier >= 1.0)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("backoff_multiplier %g must be >= 1", backoff_multiplier));
  }
  if (!(jitter >= 0.0 && jitter <= 1.0)) {
    return absl::InvalidArgumentError(absl::StrFormat("jitter %g out of range [0, 1]", jitter));
  }
  if (local_max_lanes < 1 || local_max_lanes > 256) {
    return absl::InvalidArgumentError(
        absl::StrFormat("local_max_lanes %d out of range [1, 256]", local_max_lanes));
  }
  if (local_segment_bytes < (uint64_t{1} << 20) || local_segment_bytes > (uint64_t{1} << 30)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "local_segment_bytes %d out of range [1 MiB, 1 GiB]", local_segment_bytes));
  }
  if (ucx_window < 1 || ucx_window > 4096) {
    return absl::InvalidArgumentError(
        absl::StrFormat("ucx_window %d out of range [1, 4096]", ucx_window));
  }
  if (ucx_region_bytes < (uint64_t{1} << 20) || ucx_region_bytes > (uint64_t{2} << 30)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "ucx_region_bytes %d out of range [1 MiB, 2 GiB]", ucx_region_bytes));
  }
  if (ucx_reopen_interval_ms <= 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("ucx_reopen_interval_ms %d must be > 0", ucx_reopen_interval_ms));
  }
  return ucx.Validate();
}

absl::StatusOr<std::unique_ptr<StoreClient>> StoreClient::Connect(const std::string& target,
                                                                  const ClientOptions& options) {
  RETURN_IF_ERROR(options.Validate());
  if (target.empty()) return absl::InvalidArgumentError("target must not be empty");
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(static_cast<int>(options.max_message_bytes));
  args.SetMaxSendMessageSize(static_cast<int>(options.max_message_bytes));
  // Retries are ours (UNAVAILABLE only, bounded); keep gRPC's off so the
  // attempt count is what the options say.
  args.SetInt(GRPC_ARG_ENABLE_RETRIES, 0);
  // One client, one connection: clients do not share a global subchannel,
  // so N clients give N connections (as N workers would).
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  std::shared_ptr<grpc::ChannelCredentials> credentials = grpc::InsecureChannelCredentials();
  if (options.tls) {
    grpc::SslCredentialsOptions ssl;
    if (!options.tls_ca_file.empty()) {
      ASSIGN_OR_RETURN(ssl.pem_root_certs, ReadPemFile(options.tls_ca_file, "tls_ca_file"));
    }
    if (!options.tls_cert_file.empty()) {
      ASSIGN_OR_RETURN(ssl.pem_cert_chain, ReadPemFile(options.tls_cert_file, "tls_cert_file"));
      ASSIGN_OR_RETURN(ssl.pem_private_key, ReadPemFile(options.tls_key_file, "tls_key_file"));
    }
    credentials = grpc::SslCredentials(ssl);
    if (!options.tls_server_name.empty()) {
      args.SetSslTargetNameOverride(options.tls_server_name);
    }
  }
  InitAbslCycleClock();  // before any connect: common/absl_cycle_clock.h
  std::shared_ptr<grpc::Channel> channel =
      grpc::CreateCustomChannel(target, credentials, args);
  if (channel == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("cannot create a channel to ", target));
  }
  std::string token = options.token;
  if (!options.token_file.empty()) {
    ASSIGN_OR_RETURN(token, ReadTokenFile(options.token_file));
  }
  if (!token.empty()) RETURN_IF_ERROR(CheckToken(token, "token"));
  return std::unique_ptr<StoreClient>(
      new StoreClient(target, std::move(channel), options, std::move(token)));
}

void StoreClient::AddCallMetadata(grpc::ClientContext* context) const {
  if (!token_.empty()) {
    context->AddMetadata(wire::kTokenMetadata,
                         absl::StrCat(std::string(wire::kBearerPrefix), token_));
  }
  if (options_.shared_namespace) {
    context->AddMetadata(wire::kNamespaceMetadata, wire::kSharedNamespace);
  }
}

namespace {

// The data plane for `target`: this process's shared one with the same UCX
// options and the same identity when `share` and one is alive, else a new
// one (shared from then on when `share`). `identity` names whom the
// plane's session acts for (the token and the namespace): the server binds
// a session to the tenant that opened it, so clients of two tenants must
// not share one.
absl::StatusOr<std::shared_ptr<ClientDataPlane>> DataPlaneFor(const std::string& target,
                                                              const ucx::UcxOptions& options,
                                                              const std::string& identity,
                                                              bool share) {
  if (!share) return ClientDataPlane::Create(options);
  static absl::Mutex mu(absl::kConstInit);
  static auto* planes ABSL_GUARDED_BY(mu) =
      new absl::flat_hash_map<std::string, std::weak_ptr<ClientDataPlane>>();
  // Transports hold no '\n'.
  const std::string key = absl::StrCat(target, "\n", options.transports, "\n",
                                       options.mutex_locks ? "mutex" : "spin", "\n", identity);
  absl::MutexLock lock(&mu);
  if (auto it = planes->find(key); it != planes->end()) {
    if (std::shared_ptr<ClientDataPlane> plane = it->second.lock()) return plane;
  }
  ASSIGN_OR_RETURN(std::shared_ptr<ClientDataPlane> plane, ClientDataPlane::Create(options));
  (*planes)[key] = plane;
  return plane;
}

}  // namespace

StoreClient::StoreClient(const std::string& target, std::shared_ptr<grpc::Channel> channel,
                         const ClientOptions& options, std::string token)
    : target_(target),
      options_(options),
      token_(std::move(token)),
      channel_(std::move(channel)),
      stub_(v1::KvStore::NewStub(channel_)) {
  if (options_.use_ucx) {
    absl::StatusOr<std::shared_ptr<ClientDataPlane>> plane =
        DataPlaneFor(target, options_.ucx,
                     absl::StrCat(options_.shared_namespace ? "shared\n" : "own\n",
                                  options_.tls_cert_file, "\n", token_),
                     options_.ucx_share_data_plane);
    if (plane.ok()) {
      data_plane_ = *std::move(plane);
    } else {
      KVTIER_LOG(WARNING) << "UCX unavailable, page bytes travel inline: " << plane.status();
    }
  }
  if (options_.local_lanes) {
    lanes_ = std::make_unique<LanePool>(
        LanePool::Options{.max_lanes = options_.local_max_lanes,
                          .segment_bytes = options_.local_segment_bytes,
                          .timeout = absl::Milliseconds(options_.deadline_ms),
                          .offer_direct = options_.local_direct_transfers,
                          .retry_interval = absl::Milliseconds(options_.ucx_reopen_interval_ms)},
        [this] { return OpenLocalLane(); });
  }
}

template <typename Request, typename Response>
absl::Status StoreClient::Call(Method<Request, Response> method, const Request& request,
                               Response* response) {
  absl::BitGen gen;
  double backoff_ms = static_cast<double>(options_.initial_backoff_ms);
  absl::Status status;
  for (int attempt = 1;; ++attempt) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() +
                         std::chrono::milliseconds(options_.deadline_ms));
    AddCallMetadata(&context);
    response->Clear();
    status = v1::FromGrpcStatus((stub_.get()->*method)(&context, request, response));
    if (status.code() != absl::StatusCode::kUnavailable || attempt >= options_.max_attempts) {
      break;
    }
    const double factor = absl::Uniform(gen, 1.0 - options_.jitter, 1.0 + options_.jitter);
    absl::SleepFor(absl::Milliseconds(backoff_ms * factor));
    backoff_ms = std::min(backoff_ms * options_.backoff_multiplier,
                          static_cast<double>(options_.max_backoff_ms));
  }
  return status;
}

absl::StatusOr<LookupReply> StoreClient::Lookup(absl::Span<const Hash128> chain,
                                                uint32_t layer_begin, uint32_t layer_count) {
  v1::LookupRequest request;
  request.mutable_chain()->Reserve(static_cast<int>(chain.size()));
  for (const Hash128& h : chain) request.add_chain(h.CanonicalString());
  request.set_layer_begin(layer_begin);
  request.set_layer_count(layer_count);
  v1::LookupResponse response;
  RETURN_IF_ERROR(Call(&v1::KvStore::Stub::Lookup, request, &response));
  LookupReply reply;
  reply.prefix_pages = response.prefix_pages();
  reply.tiers.reserve(response.tiers_size());
  for (int t : response.tiers()) reply.tiers.push_back(static_cast<v1::Tier>(t));
  return reply;
}

absl::StatusOr<std::vector<PutOutcome>> StoreClient::BatchPut(absl::Span<const PutPage> pages) {
  if (pages.empty()) return absl::InvalidArgumentError("BatchPut: empty batch");
  std::vector<uint64_t> sizes;
  sizes.reserve(pages.size());
  for (size_t i = 0; i < pages.size(); ++i) {
    if (pages[i].data.size() + kPerPageOverheadBytes > PayloadBudget(options_)) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "pages[%d]: %d bytes do not fit in max_message_bytes %d", i, pages[i].data.size(),
          options_.max_message_bytes));
    }
    sizes.push_back(pages[i].data.size());
  }
  std::vector<PutOutcome> out;
  out.reserve(pages.size());
  for (auto [begin, end] : Chunks(sizes, options_.max_batch_pages, PayloadBudget(options_))) {
    RETURN_IF_ERROR(PutChunk(pages.subspan(begin, end - begin), &out));
  }
  return out;
}

void StoreClient::SetKeyAndLayout(const PutPage& page, v1::PutPage* wire) {
  v1::KeyToProto(page.key, wire->mutable_key());
  v1::LayoutToProto(page.layout, wire->mutable_layout());
}

absl::Status StoreClient::PutChunkInline(absl::Span<const PutPage> pages,
                                         std::vector<PutOutcome>* out) {
  v1::BatchPutRequest request;
  for (const PutPage& page : pages) {
    v1::PutPage* wire = request.add_pages();
    SetKeyAndLayout(page, wire);
    wire->set_checksum(PageChecksum(page.data.data(), page.data.size()));
    wire->set_inline_data(page.data.data(), page.data.size());
  }
  v1::BatchPutResponse response;
  RETURN_IF_ERROR(Call(&v1::KvStore::Stub::BatchPut, request, &response));
  RETURN_IF_ERROR(AppendPutOutcomes("BatchPut", response, pages.size(), out));
  counters_.inline_put_pages += pages.size();
  return absl::OkStatus();
}

absl::Status StoreClient::AppendPutOutcomes(const char* rpc,
                                            const v1::BatchPutResponse& response,
                                            size_t n_pages, std::vector<PutOutcome>* out) {
  if (response.results_size() != static_cast<int>(n_pages)) {
    return absl::InternalError(
        absl::StrFormat("%s: %d results for %d pages", rpc, response.results_size(), n_pages));
  }
  for (const v1::PutResult& r : response.results()) {
    out->push_back(PutOutcome{.already_present = r.already_present()});
  }
  return absl::OkStatus();
}

absl::Status StoreClient::GetChunk(absl::Span<const PageKey> keys, std::vector<GotPage>* out) {
  v1::BatchGetRequest request;
  for (const PageKey& key : keys) v1::KeyToProto(key, request.add_keys());
  v1::BatchGetResponse response;
  absl::Status status = Call(&v1::KvStore::Stub::BatchGet, request, &response);
  if (status.code() == absl::StatusCode::kResourceExhausted && keys.size() > 1) {
    // The response outgrew the message limit: ask for each half separately.
    const size_t half = keys.size() / 2;
    RETURN_IF_ERROR(GetChunk(keys.subspan(0, half), out));
    return GetChunk(keys.subspan(half), out);
  }
  RETURN_IF_ERROR(status);
  if (response.pages_size() != static_cast<int>(keys.size())) {
    return absl::InternalError(absl::StrFormat("BatchGet: %d pages for %d keys",
                                               response.pages_size(), keys.size()));
  }
  for (int i = 0; i < response.pages_size(); ++i) {
    v1::GotPage& wire = *response.mutable_pages(i);
    GotPage page;
    page.key = keys[i];
    page.status = wire.status();
    if (page.status == v1::PAGE_STATUS_OK) {
      ASSIGN_OR_RETURN(page.layout,
                       v1::LayoutFromProto(wire.layout(), absl::StrCat("pages[", i, "].layout")));
      page.checksum = wire.checksum();
      page.tier = wire.tier();
      page.data = std::move(*wire.mutable_inline_data());
    }
    out->push_back(std::move(page));
  }
  counters_.inline_get_pages += keys.size();
  return absl::OkStatus();
}

absl::StatusOr<std::vector<GotPage>> StoreClient::BatchGet(
    absl::Span<const PageKey> keys, uint64_t page_bytes_hint,
    absl::Span<const absl::Span<uint8_t>> destinations) {
  std::vector<PageDestination> whole(destinations.size());
  for (size_t i = 0; i < destinations.size(); ++i) whole[i].pieces = {destinations[i]};
  return BatchGet(keys, page_bytes_hint, absl::MakeConstSpan(whole));
}

absl::StatusOr<std::vector<GotPage>> StoreClient::BatchGet(
    absl::Span<const PageKey> keys, uint64_t page_bytes_hint,
    absl::Span<const PageDestination> destinations) {
  if (keys.empty()) return absl::InvalidArgumentError("BatchGet: empty batch");
  if (!destinations.empty() && destinations.size() != keys.size()) {
    return absl::InvalidArgumentError(absl::StrFormat("BatchGet: %d destinations for %d keys",
                                                      destinations.size(), keys.size()));
  }
  size_t per_chunk = options_.max_batch_pages;
  if (page_bytes_hint > 0) {
    const uint64_t fit = PayloadBudget(options_) / (page_bytes_hint + kPerPageOverheadBytes);
    per_chunk = std::clamp<uint64_t>(fit, 1, per_chunk);
  }
  std::vector<GotPage> out;
  out.reserve(keys.size());
  for (size_t begin = 0; begin < keys.size(); begin += per_chunk) {
    RETURN_IF_ERROR(GetChunkAny(keys.subspan(begin, per_chunk), page_bytes_hint,
                                destinations.empty() ? destinations
                                                     : destinations.subspan(begin, per_chunk),
                                &out));
  }
  return out;
}

absl::StatusOr<uint32_t> StoreClient::Delete(absl::Span<const PageKey> keys, bool force) {
  uint32_t deleted = 0;
  for (size_t begin = 0; begin < keys.size(); begin += options_.max_batch_pages) {
    v1::DeleteRequest request;
    for (const PageKey& key : keys.subspan(begin, options_.max_batch_pages)) {
      v1::KeyToProto(key, request.add_keys());
    }
    request.set_force(force);
    v1::DeleteResponse response;
    RETURN_IF_ERROR(Call(&v1::KvStore::Stub::Delete, request, &response));
    deleted += response.deleted_pages();
  }
  return deleted;
}

absl::StatusOr<std::string> StoreClient::Pin(absl::Span<const PageKey> keys, uint64_t ttl_ms,
                                             std::string_view pin_id) {
  const bool create = pin_id.empty();
  std::string id(pin_id);
  size_t begin = 0;
  do {
    v1::PinRequest request;
    for (const PageKey& key : keys.subspan(begin, options_.max_batch_pages)) {
      v1::KeyToProto(key, request.add_keys());
    }
    request.set_ttl_ms(ttl_ms);
    request.set_pin_id(id);
    v1::PinResponse response;
    absl::Status status = Call(&v1::KvStore::Stub::Pin, request, &response);
    if (status.ok() && response.pin_id().empty()) {
      // Else the next chunk would create a second pin instead of extending.
      status = absl::InternalError("Pin: the server answered an empty pin_id");
    }
    if (!status.ok()) {
      if (create && !id.empty()) {
        // Best effort: the pin also expires with its TTL if this fails.
        absl::Status released = Unpin(id);
        if (!released.ok()) status.SetPayload("kvtier.unpin", absl::Cord(released.ToString()));
      }
      return status;
    }
    id = std::move(*response.mutable_pin_id());
    begin += options_.max_batch_pages;
  } while (begin < keys.size());
  return id;
}

absl::Status StoreClient::Unpin(std::string_view pin_id) {
  v1::UnpinRequest request;
  request.set_pin_id(pin_id.data(), pin_id.size());
  v1::UnpinResponse response;
  return Call(&v1::KvStore::Stub::Unpin, request, &response);
}

absl::StatusOr<v1::StatsResponse> StoreClient::Stats() {
  v1::StatsResponse response;
  RETURN_IF_ERROR(Call(&v1::KvStore::Stub::Stats, v1::StatsRequest(), &response));
  return response;
}

absl::StatusOr<v1::MembersResponse> StoreClient::Members() {
  v1::MembersResponse response;
  RETURN_IF_ERROR(Call(&v1::KvStore::Stub::Members, v1::MembersRequest(), &response));
  return response;
}

absl::StatusOr<v1::ReplicaPutResponse> StoreClient::ReplicaPut(
    const v1::ReplicaPutRequest& request) {
  v1::ReplicaPutResponse response;
  RETURN_IF_ERROR(Call(&v1::KvStore::Stub::ReplicaPut, request, &response));
  return response;
}

}  // namespace kvtier::client

namespace kvtier::client {

// The data-plane and lane RPCs are issued from store_client_ucx.cc and
// store_client_lanes.cc.
template absl::Status StoreClient::Call(
    Method<v1::OpenDataPlaneRequest, v1::OpenDataPlaneResponse>, const v1::OpenDataPlaneRequest&,
    v1::OpenDataPlaneResponse*);
template absl::Status StoreClient::Call(
    Method<v1::CloseDataPlaneRequest, v1::CloseDataPlaneResponse>,
    const v1::CloseDataPlaneRequest&, v1::CloseDataPlaneResponse*);
template absl::Status StoreClient::Call(Method<v1::ReservePutRequest, v1::ReservePutResponse>,
                                        const v1::ReservePutRequest&, v1::ReservePutResponse*);
template absl::Status StoreClient::Call(Method<v1::CommitPutRequest, v1::BatchPutResponse>,
                                        const v1::CommitPutRequest&, v1::BatchPutResponse*);
template absl::Status StoreClient::Call(
    Method<v1::OpenLocalLaneRequest, v1::OpenLocalLaneResponse>, const v1::OpenLocalLaneRequest&,
    v1::OpenLocalLaneResponse*);
template absl::Status StoreClient::Call(Method<v1::AbortPutRequest, v1::AbortPutResponse>,
                                        const v1::AbortPutRequest&, v1::AbortPutResponse*);
template absl::Status StoreClient::Call(Method<v1::BatchPutRequest, v1::BatchPutResponse>,
                                        const v1::BatchPutRequest&, v1::BatchPutResponse*);
template absl::Status StoreClient::Call(Method<v1::BatchGetRequest, v1::BatchGetResponse>,
                                        const v1::BatchGetRequest&, v1::BatchGetResponse*);

}  // namespace kvtier::client
