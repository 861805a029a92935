#include "kvstore/cluster/etcd_client.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "etcd/etcdserver/etcdserverpb/rpc.grpc.pb.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/grpcpp.h"
#include "kvtier/v1/convert.h"

namespace kvtier::cluster {

struct EtcdClient::Endpoint {
  std::string target;
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<etcdserverpb::KV::Stub> kv;
  std::unique_ptr<etcdserverpb::Lease::Stub> lease;
  std::unique_ptr<etcdserverpb::Watch::Stub> watch;
};

// Registers a call's context for the lifetime of the call, so that Shutdown
// and endpoint changes can cancel it.
class EtcdClient::LiveCall {
 public:
  LiveCall(EtcdClient* client, grpc::ClientContext* context, int64_t generation, bool is_watch)
      : client_(client), context_(context) {
    absl::MutexLock lock(&client_->mu_);
    client_->live_calls_[context_] = CallInfo{.generation = generation, .is_watch = is_watch};
    // Cancelling before the call starts is allowed: it starts cancelled.
    if (client_->shut_down_ || generation != client_->generation_) context_->TryCancel();
  }
  ~LiveCall() {
    absl::MutexLock lock(&client_->mu_);
    client_->live_calls_.erase(context_);
  }
  LiveCall(const LiveCall&) = delete;
  LiveCall& operator=(const LiveCall&) = delete;

 private:
  EtcdClient* const client_;
  grpc::ClientContext* const context_;
};

namespace {

// Channels reconnect quickly after etcd restarts: gRPC's default backoff
// grows to 120 s. GRPC_ARG_MIN_RECONNECT_BACKOFF_MS stays at its default:
// gRPC also takes it as each connection attempt's timeout, and an attempt
// to an etcd that is still starting (its port open, its server not yet
// answering) must outlast the start.
std::shared_ptr<grpc::Channel> MakeChannel(const std::string& target) {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
  return grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args);
}

// Waits until `channel` is READY (true), fails to connect, or `deadline`.
bool AwaitReady(grpc::Channel& channel, absl::Time deadline) {
  grpc_connectivity_state state = channel.GetState(/*try_to_connect=*/true);
  bool changed_once = false;
  while (state != GRPC_CHANNEL_READY) {
    if (state == GRPC_CHANNEL_TRANSIENT_FAILURE && changed_once) return false;
    if (!channel.WaitForStateChange(state, absl::ToChronoTime(deadline))) return false;
    state = channel.GetState(/*try_to_connect=*/true);
    changed_once = true;
  }
  return true;
}

EtcdKeyValue FromProto(const mvccpb::KeyValue& kv) {
  return EtcdKeyValue{.key = kv.key(), .value = kv.value(), .mod_revision = kv.mod_revision()};
}

}  // namespace

std::string PrefixRangeEnd(const std::string& prefix) {
  std::string end = prefix;
  while (!end.empty()) {
    if (static_cast<unsigned char>(end.back()) < 0xff) {
      end.back() = static_cast<char>(static_cast<unsigned char>(end.back()) + 1);
      return end;
    }
    end.pop_back();
  }
  return std::string(1, '\0');
}

absl::StatusOr<std::unique_ptr<EtcdClient>> EtcdClient::Connect(std::vector<std::string> endpoints,
                                                                absl::Duration connect_timeout,
                                                                absl::Duration call_timeout) {
  if (endpoints.empty()) return absl::InvalidArgumentError("no etcd endpoints");
  std::vector<std::unique_ptr<Endpoint>> built;
  for (std::string& target : endpoints) {
    auto endpoint = std::make_unique<Endpoint>();
    endpoint->target = std::move(target);
    endpoint->channel = MakeChannel(endpoint->target);
    endpoint->kv = etcdserverpb::KV::NewStub(endpoint->channel);
    endpoint->lease = etcdserverpb::Lease::NewStub(endpoint->channel);
    endpoint->watch = etcdserverpb::Watch::NewStub(endpoint->channel);
    built.push_back(std::move(endpoint));
  }
  // Each endpoint gets a share of the time per round, so that one that
  // swallows packets cannot use it all.
  const absl::Time deadline = absl::Now() + connect_timeout;
  const absl::Duration share =
      std::max(connect_timeout / static_cast<int64_t>(built.size()), absl::Milliseconds(100));
  while (true) {
    for (size_t i = 0; i < built.size(); ++i) {
      if (AwaitReady(*built[i]->channel, std::min(deadline, absl::Now() + share))) {
        return std::unique_ptr<EtcdClient>(new EtcdClient(std::move(built), i, call_timeout));
      }
      if (absl::Now() >= deadline) {
        std::vector<std::string> targets;
        for (const auto& endpoint : built) targets.push_back(endpoint->target);
        return absl::UnavailableError(absl::StrCat("no etcd endpoint answered within ",
                                                   absl::FormatDuration(connect_timeout), ": ",
                                                   absl::StrJoin(targets, ", ")));
      }
    }
    // Every endpoint refused at once: let their reconnect backoff pass.
    absl::SleepFor(std::min(absl::Milliseconds(100), deadline - absl::Now()));
  }
}

EtcdClient::EtcdClient(std::vector<std::unique_ptr<Endpoint>> endpoints, size_t current,
                       absl::Duration call_timeout)
    : endpoints_(std::move(endpoints)), call_timeout_(call_timeout), current_(current) {}

EtcdClient::~EtcdClient() { Shutdown(); }

const EtcdClient::Endpoint& EtcdClient::Current(int64_t* generation) const {
  absl::MutexLock lock(&mu_);
  *generation = generation_;
  return *endpoints_[current_];
}

void EtcdClient::NextEndpoint(int64_t generation) {
  absl::MutexLock lock(&mu_);
  if (generation != generation_) return;  // another call already moved on
  current_ = (current_ + 1) % endpoints_.size();
  ++generation_;
  for (const auto& [context, info] : live_calls_) {
    if (info.is_watch) context->TryCancel();
  }
}

absl::Status EtcdClient::Convert(const char* call, const Endpoint& endpoint, int64_t generation,
                                 const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  const absl::Status converted = v1::FromGrpcStatus(status);
  if (converted.code() == absl::StatusCode::kUnavailable ||
      converted.code() == absl::StatusCode::kDeadlineExceeded) {
    NextEndpoint(generation);
  }
  return absl::Status(converted.code(), absl::StrCat("etcd ", call, " at ", endpoint.target, ": ",
                                                     converted.message()));
}

void EtcdClient::SetDeadline(grpc::ClientContext* context, absl::Duration timeout) const {
  context->set_deadline(absl::ToChronoTime(absl::Now() + timeout));
}

absl::StatusOr<int64_t> EtcdClient::LeaseGrant(int64_t ttl_s) {
  int64_t generation = 0;
  const Endpoint& endpoint = Current(&generation);
  grpc::ClientContext context;
  SetDeadline(&context, call_timeout_);
  LiveCall live(this, &context, generation, /*is_watch=*/false);
  etcdserverpb::LeaseGrantRequest request;
  request.set_ttl(ttl_s);
  etcdserverpb::LeaseGrantResponse response;
  absl::Status status = Convert("LeaseGrant", endpoint, generation,
                                endpoint.lease->LeaseGrant(&context, request, &response));
  if (!status.ok()) return status;
  if (!response.error().empty()) {
    return absl::InternalError(
        absl::StrCat("etcd LeaseGrant at ", endpoint.target, ": ", response.error()));
  }
  return response.id();
}

absl::StatusOr<int64_t> EtcdClient::LeaseKeepAlive(int64_t lease_id, absl::Duration timeout) {
  int64_t generation = 0;
  const Endpoint& endpoint = Current(&generation);
  grpc::ClientContext context;
  SetDeadline(&context, timeout);
  LiveCall live(this, &context, generation, /*is_watch=*/false);
  // A fresh stream per keep-alive: nothing to resynchronise after a failure.
  auto stream = endpoint.lease->LeaseKeepAlive(&context);
  etcdserverpb::LeaseKeepAliveRequest request;
  request.set_id(lease_id);
  etcdserverpb::LeaseKeepAliveResponse response;
  bool answered = false;
  if (stream->Write(request) && stream->WritesDone()) {
    answered = stream->Read(&response);
    // etcd ends the stream after our half-close; drain to reach Finish.
    etcdserverpb::LeaseKeepAliveResponse extra;
    while (answered && stream->Read(&extra)) {
    }
  }
  absl::Status status = Convert("LeaseKeepAlive", endpoint, generation, stream->Finish());
  if (!status.ok()) return status;
  if (!answered) {
    return absl::UnavailableError(
        absl::StrCat("etcd LeaseKeepAlive at ", endpoint.target, ": no answer"));
  }
  return response.ttl();
}

absl::Status EtcdClient::LeaseRevoke(int64_t lease_id, absl::Duration timeout) {
  int64_t generation = 0;
  const Endpoint& endpoint = Current(&generation);
  grpc::ClientContext context;
  SetDeadline(&context, timeout);
  etcdserverpb::LeaseRevokeRequest request;
  request.set_id(lease_id);
  etcdserverpb::LeaseRevokeResponse response;
  return Convert("LeaseRevoke", endpoint, generation,
                 endpoint.lease->LeaseRevoke(&context, request, &response));
}

absl::StatusOr<int64_t> EtcdClient::Put(const std::string& key, const std::string& value,
                                        int64_t lease_id) {
  int64_t generation = 0;
  const Endpoint& endpoint = Current(&generation);
  grpc::ClientContext context;
  SetDeadline(&context, call_timeout_);
  LiveCall live(this, &context, generation, /*is_watch=*/false);
  etcdserverpb::PutRequest request;
  request.set_key(key);
  request.set_value(value);
  request.set_lease(lease_id);
  etcdserverpb::PutResponse response;
  absl::Status status =
      Convert("Put", endpoint, generation, endpoint.kv->Put(&context, request, &response));
  if (!status.ok()) return status;
  return response.header().revision();
}

absl::StatusOr<EtcdRange> EtcdClient::RangePrefix(const std::string& prefix) {
  int64_t generation = 0;
  const Endpoint& endpoint = Current(&generation);
  grpc::ClientContext context;
  SetDeadline(&context, call_timeout_);
  LiveCall live(this, &context, generation, /*is_watch=*/false);
  etcdserverpb::RangeRequest request;
  request.set_key(prefix);
  request.set_range_end(PrefixRangeEnd(prefix));
  etcdserverpb::RangeResponse response;
  absl::Status status =
      Convert("Range", endpoint, generation, endpoint.kv->Range(&context, request, &response));
  if (!status.ok()) return status;
  EtcdRange range;
  range.revision = response.header().revision();
  for (const mvccpb::KeyValue& kv : response.kvs()) range.kvs.push_back(FromProto(kv));
  return range;
}

absl::Status EtcdClient::WatchPrefix(const std::string& prefix, int64_t start_revision,
                                     const std::function<void(const EtcdWatchBatch&)>& on_batch) {
  int64_t generation = 0;
  const Endpoint& endpoint = Current(&generation);
  grpc::ClientContext context;
  LiveCall live(this, &context, generation, /*is_watch=*/true);
  auto stream = endpoint.watch->Watch(&context);
  etcdserverpb::WatchRequest request;
  etcdserverpb::WatchCreateRequest* create = request.mutable_create_request();
  create->set_key(prefix);
  create->set_range_end(PrefixRangeEnd(prefix));
  create->set_start_revision(start_revision);
  absl::Status ended;
  if (stream->Write(request)) {
    etcdserverpb::WatchResponse response;
    while (stream->Read(&response)) {
      if (response.compact_revision() > 0) {
        ended = absl::OutOfRangeError(absl::StrCat("etcd Watch at ", endpoint.target, ": revision ",
                                                   start_revision, " compacted (now ",
                                                   response.compact_revision(), ")"));
        break;
      }
      if (response.canceled()) {
        ended = absl::AbortedError(absl::StrCat("etcd Watch at ", endpoint.target,
                                                ": cancelled by etcd: ", response.cancel_reason()));
        break;
      }
      if (response.events_size() == 0) continue;  // created, or progress
      EtcdWatchBatch batch;
      batch.revision = response.header().revision();
      for (const mvccpb::Event& event : response.events()) {
        batch.events.push_back(EtcdEvent{.is_delete = event.type() == mvccpb::Event::DELETE,
                                         .kv = FromProto(event.kv())});
      }
      on_batch(batch);
    }
  }
  // Leaving with messages unread: cancel, or Finish would wait for them.
  if (!ended.ok()) context.TryCancel();
  const grpc::Status finished = stream->Finish();
  if (!ended.ok()) return ended;
  absl::Status status = Convert("Watch", endpoint, generation, finished);
  if (!status.ok()) return status;
  return absl::UnavailableError(absl::StrCat("etcd Watch at ", endpoint.target, ": stream ended"));
}

void EtcdClient::Shutdown() {
  absl::MutexLock lock(&mu_);
  shut_down_ = true;
  for (const auto& [context, info] : live_calls_) context->TryCancel();
}

}  // namespace kvtier::cluster
