// StoreClient's streaming and long-waiting calls: WatchCacheEvents, Drain.
#include <chrono>

#include "client/store_client.h"
#include "common/status_macros.h"
#include "kvtier/v1/convert.h"

namespace kvtier::client {

CacheEventStream::CacheEventStream(std::unique_ptr<grpc::ClientContext> context,
                                   std::unique_ptr<grpc::ClientReader<v1::CacheEventBatch>> reader)
    : context_(std::move(context)), reader_(std::move(reader)) {}

CacheEventStream::~CacheEventStream() {
  if (finished_) return;
  // A reader must be finished before it goes; cancelling makes Read return
  // false at once.
  Cancel();
  v1::CacheEventBatch ignored;
  while (reader_->Read(&ignored)) {
  }
  reader_->Finish();
}

bool CacheEventStream::Next(v1::CacheEventBatch* batch) {
  if (finished_) return false;
  return reader_->Read(batch);
}

absl::Status CacheEventStream::Finish() {
  if (finished_) return absl::FailedPreconditionError("the stream was finished already");
  finished_ = true;
  return v1::FromGrpcStatus(reader_->Finish());
}

void CacheEventStream::Cancel() { context_->TryCancel(); }

std::unique_ptr<CacheEventStream> StoreClient::WatchCacheEvents(
    const v1::WatchCacheEventsRequest& request) {
  auto context = std::make_unique<grpc::ClientContext>();
  AddCallMetadata(context.get());
  std::unique_ptr<grpc::ClientReader<v1::CacheEventBatch>> reader =
      stub_->WatchCacheEvents(context.get(), request);
  return std::make_unique<CacheEventStream>(std::move(context), std::move(reader));
}

absl::StatusOr<v1::DrainResponse> StoreClient::Drain(uint32_t wait_s) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(wait_s) +
                       std::chrono::milliseconds(options_.deadline_ms));
  AddCallMetadata(&context);
  v1::DrainRequest request;
  request.set_wait_s(wait_s);
  v1::DrainResponse response;
  RETURN_IF_ERROR(v1::FromGrpcStatus(stub_->Drain(&context, request, &response)));
  return response;
}

}  // namespace kvtier::client
