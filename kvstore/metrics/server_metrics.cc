#include "kvstore/metrics/server_metrics.h"

#include <array>
#include <map>
#include <optional>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/metrics_endpoint.h"
#include "common/status_macros.h"
#include "kvstore/service/tenants.h"
#include "prometheus/collectable.h"
#include "prometheus/counter.h"
#include "prometheus/exposer.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"
#include "prometheus/text_serializer.h"

namespace kvtier::store {
namespace {

using prometheus::ClientMetric;
using prometheus::MetricFamily;
using prometheus::MetricType;

// The scrape-time families, in FamilyNames() order with the RPC ones.
struct FamilyInfo {
  const char* name;
  const char* help;
  MetricType type;
};
constexpr FamilyInfo kFamilies[] = {
    {"kvtier_tier_pages", "Pages held in the tier", MetricType::Gauge},
    {"kvtier_tier_pinned_pages", "Pinned pages held in the tier", MetricType::Gauge},
    {"kvtier_tier_used_bytes", "Bytes the tier holds (RAM: slab bytes, reservations included)",
     MetricType::Gauge},
    {"kvtier_tier_capacity_bytes", "The tier's capacity", MetricType::Gauge},
    {"kvtier_tier_high_watermark_bytes", "Usage past which pages leave the tier",
     MetricType::Gauge},
    {"kvtier_tier_hits_total", "Pages reads were served from the tier", MetricType::Counter},
    {"kvtier_tier_evictions_total", "Pages that left the tier by policy", MetricType::Counter},
    {"kvtier_tier_in_bytes_total",
     "Page bytes that entered the tier (RAM: puts, promotions; disk: demotions)",
     MetricType::Counter},
    {"kvtier_tier_out_bytes_total", "Page bytes reads were served from the tier",
     MetricType::Counter},
    {"kvtier_get_misses_total", "Keys a get did not find", MetricType::Counter},
    {"kvtier_put_pages_total", "Pages newly stored", MetricType::Counter},
    {"kvtier_put_duplicate_pages_total", "Pages put that were stored already",
     MetricType::Counter},
    {"kvtier_lost_pages_total", "Pages dropped after failing their checksum",
     MetricType::Counter},
    {"kvtier_demotions_total", "Pages written from RAM to disk", MetricType::Counter},
    {"kvtier_promotions_total", "Pages copied from disk back to RAM on read",
     MetricType::Counter},
    {"kvtier_dropped_pages_total", "Pages evicted from their last tier", MetricType::Counter},
    {"kvtier_reserved_bytes", "RAM held by puts not yet committed", MetricType::Gauge},
    {"kvtier_quarantined_bytes", "RAM of ended data-plane puts kept from reuse",
     MetricType::Gauge},
    {"kvtier_pins", "Live pins", MetricType::Gauge},
    {"kvtier_data_dir_bytes", "The data directory's size on disk", MetricType::Gauge},
    {"kvtier_data_dir_bound_bytes", "The bound the server keeps the data directory within",
     MetricType::Gauge},
    {"kvtier_disk_space_refusals_total", "Pages the disk refused at the directory's bound",
     MetricType::Counter},
    {"kvtier_unverified_disk_pages", "Disk pages found at start not yet checksummed",
     MetricType::Gauge},
    {"kvtier_tenant_bytes", "A tenant's bytes in a tier", MetricType::Gauge},
    {"kvtier_tenant_pages", "A tenant's pages in a tier", MetricType::Gauge},
    {"kvtier_tenant_pins", "A tenant's live pins", MetricType::Gauge},
    {"kvtier_tenant_pinned_bytes", "Bytes of a tenant's pinned pages", MetricType::Gauge},
    {"kvtier_tenant_quota_bytes", "A tenant's byte quota in a tier (0: none)", MetricType::Gauge},
    {"kvtier_tenant_quota_refusals_total", "A tenant's puts refused by its quotas",
     MetricType::Counter},
    {"kvtier_put_bytes_total", "Page bytes stored, by the path they came", MetricType::Counter},
    {"kvtier_get_bytes_total", "Page bytes served, by the path they went", MetricType::Counter},
    {"kvtier_lookups_total", "Lookup calls", MetricType::Counter},
    {"kvtier_lookup_chain_pages_total", "Pages of the chains looked up", MetricType::Counter},
    {"kvtier_lookup_prefix_pages_total", "Pages of the stored prefixes Lookup found",
     MetricType::Counter},
    {"kvtier_lookup_prefix_pages", "Stored prefix length a Lookup found, pages",
     MetricType::Histogram},
    {"kvtier_cluster_members", "Members of the cluster view, by state", MetricType::Gauge},
    {"kvtier_replication_rounds_total", "Changes of the up members the replicator handled",
     MetricType::Counter},
    {"kvtier_replication_pages_copied_total", "Copies stored at a page's new owners",
     MetricType::Counter},
    {"kvtier_replication_unpinned_pages_copied_total",
     "Copies of unpinned pages made by the background pass", MetricType::Counter},
    {"kvtier_replication_copy_failures_total", "Copies to a new owner that failed",
     MetricType::Counter},
    {"kvtier_event_watchers", "Open cache event streams", MetricType::Gauge},
};

constexpr const char* kRpcDuration = "kvtier_rpc_duration_seconds";
constexpr const char* kRpcs = "kvtier_rpcs_total";

// The methods that get their own label; anything else is "other".
constexpr const char* kMethods[] = {
    "Lookup",        "BatchPut",   "BatchGet",     "Delete",     "Pin",
    "Unpin",         "Stats",      "OpenDataPlane", "CloseDataPlane", "ReservePut",
    "CommitPut",     "AbortPut",   "OpenLocalLane", "Members",    "ReplicaPut",
    "WatchCacheEvents", "Check",   "Watch"};

std::string MethodLabel(const char* full) {
  // "/kvtier.v1.KvStore/BatchPut", "/grpc.health.v1.Health/Check".
  const std::string_view name = full == nullptr ? std::string_view() : std::string_view(full);
  const bool ours = name.starts_with("/kvtier.v1.KvStore/") ||
                    name.starts_with("/grpc.health.v1.Health/");
  const size_t slash = name.rfind('/');
  if (ours && slash != std::string_view::npos) {
    const std::string_view method = name.substr(slash + 1);
    for (const char* known : kMethods) {
      if (method == known) return std::string(method);
    }
  }
  return "other";
}

std::string CodeLabel(grpc::StatusCode code) {
  const absl::StatusCode c = static_cast<absl::StatusCode>(code);
  return absl::StatusCodeToString(c);
}

ClientMetric Sample(double value, std::vector<ClientMetric::Label> labels = {}) {
  ClientMetric m;
  m.label = std::move(labels);
  m.counter.value = value;
  m.gauge.value = value;
  return m;
}

const char* StateLabel(v1::MemberState state) {
  switch (state) {
    case v1::MEMBER_JOINING:
      return "joining";
    case v1::MEMBER_UP:
      return "up";
    case v1::MEMBER_DRAINING:
      return "draining";
    case v1::MEMBER_DOWN:
      return "down";
    default:
      return "unknown";
  }
}

}  // namespace

// The RPC families, fed by the interceptor.
class ServerMetrics::RpcRecorder {
 public:
  explicit RpcRecorder(prometheus::Registry& registry)
      : durations_(prometheus::BuildHistogram()
                       .Name(kRpcDuration)
                       .Help("Duration of unary RPCs, by method")
                       .Register(registry)),
        calls_(prometheus::BuildCounter()
                   .Name(kRpcs)
                   .Help("RPCs finished, by method and status code")
                   .Register(registry)) {
    // Every method's series exist from the start, so that dashboards and
    // alerts see zeros rather than nothing.
    for (const char* method : kMethods) {
      calls_.Add({{"method", method}, {"code", CodeLabel(grpc::StatusCode::OK)}});
      durations_.Add({{"method", method}}, Buckets());
    }
  }

  void Record(const std::string& method, grpc::StatusCode code, absl::Duration duration,
              bool unary) {
    calls_.Add({{"method", method}, {"code", CodeLabel(code)}}).Increment();
    if (unary) durations_.Add({{"method", method}}, Buckets()).Observe(absl::ToDoubleSeconds(duration));
  }

 private:
  static prometheus::Histogram::BucketBoundaries Buckets() {
    return {0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
            0.05,    0.1,    0.25,    0.5,    1,     2.5,    5,      10};
  }

  prometheus::Family<prometheus::Histogram>& durations_;
  prometheus::Family<prometheus::Counter>& calls_;
};

namespace {

class RpcInterceptor final : public grpc::experimental::Interceptor {
 public:
  RpcInterceptor(grpc::experimental::ServerRpcInfo* info, ServerMetrics::RpcRecorder* recorder)
      : recorder_(recorder),
        method_(MethodLabel(info->method())),
        unary_(info->type() == grpc::experimental::ServerRpcInfo::Type::UNARY),
        start_(absl::Now()) {}

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(
            grpc::experimental::InterceptionHookPoints::PRE_SEND_STATUS)) {
      recorder_->Record(method_, methods->GetSendStatus().error_code(), absl::Now() - start_,
                        unary_);
    }
    methods->Proceed();
  }

 private:
  ServerMetrics::RpcRecorder* const recorder_;
  const std::string method_;
  const bool unary_;
  const absl::Time start_;
};

class RpcInterceptorFactory final
    : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  explicit RpcInterceptorFactory(std::shared_ptr<ServerMetrics::RpcRecorder> recorder)
      : recorder_(std::move(recorder)) {}
  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override {
    return new RpcInterceptor(info, recorder_.get());
  }

 private:
  const std::shared_ptr<ServerMetrics::RpcRecorder> recorder_;
};

}  // namespace

// The scrape-time families.
class ServerMetrics::Collector final : public prometheus::Collectable {
 public:
  explicit Collector(const ServerMetrics* owner) : owner_(owner) {}

  std::vector<MetricFamily> Collect() const override {
    Store* store;
    const KvStoreService* service;
    const access::AccessControl* access;
    const cluster::Membership* membership;
    const cluster::Replicator* replicator;
    {
      absl::MutexLock lock(&owner_->mu_);
      store = owner_->store_;
      service = owner_->service_;
      access = owner_->access_;
      membership = owner_->membership_;
      replicator = owner_->replicator_;
    }
    std::map<std::string, MetricFamily> families;
    auto add = [&](const char* name, ClientMetric sample) {
      families[name].metric.push_back(std::move(sample));
    };
    if (store != nullptr) {
      const StoreStats s = store->Stats();
      for (const auto& [tier, t] : {std::pair<const char*, const TierStats*>{"ram", &s.ram},
                                    std::pair<const char*, const TierStats*>{"disk", &s.disk}}) {
        const std::vector<ClientMetric::Label> l = {{"tier", tier}};
        add("kvtier_tier_pages", Sample(static_cast<double>(t->pages), l));
        add("kvtier_tier_pinned_pages", Sample(static_cast<double>(t->pinned_pages), l));
        add("kvtier_tier_used_bytes", Sample(static_cast<double>(t->used_bytes), l));
        add("kvtier_tier_capacity_bytes", Sample(static_cast<double>(t->capacity_bytes), l));
        add("kvtier_tier_high_watermark_bytes",
            Sample(static_cast<double>(t->high_watermark_bytes), l));
        add("kvtier_tier_hits_total", Sample(static_cast<double>(t->hits), l));
        add("kvtier_tier_evictions_total", Sample(static_cast<double>(t->evictions), l));
        add("kvtier_tier_in_bytes_total", Sample(static_cast<double>(t->bytes_in), l));
        add("kvtier_tier_out_bytes_total", Sample(static_cast<double>(t->bytes_out), l));
      }
      add("kvtier_get_misses_total", Sample(static_cast<double>(s.get_misses)));
      add("kvtier_put_pages_total", Sample(static_cast<double>(s.put_pages)));
      add("kvtier_put_duplicate_pages_total", Sample(static_cast<double>(s.put_duplicate_pages)));
      add("kvtier_lost_pages_total", Sample(static_cast<double>(s.lost_pages)));
      add("kvtier_demotions_total", Sample(static_cast<double>(s.demotions)));
      add("kvtier_promotions_total", Sample(static_cast<double>(s.promotions)));
      add("kvtier_dropped_pages_total", Sample(static_cast<double>(s.dropped_pages)));
      add("kvtier_reserved_bytes", Sample(static_cast<double>(s.reserved_bytes)));
      add("kvtier_quarantined_bytes", Sample(static_cast<double>(s.quarantined_bytes)));
      add("kvtier_pins", Sample(static_cast<double>(s.active_pins)));
      add("kvtier_data_dir_bytes", Sample(static_cast<double>(s.data_dir_bytes)));
      add("kvtier_data_dir_bound_bytes", Sample(static_cast<double>(s.data_dir_bound_bytes)));
      add("kvtier_disk_space_refusals_total",
          Sample(static_cast<double>(s.disk_space_refusals)));
      add("kvtier_unverified_disk_pages", Sample(static_cast<double>(s.unverified_disk_pages)));
      const std::shared_ptr<const access::AccessTable> table =
          access != nullptr ? access->Current() : nullptr;
      for (const TenantStats& t : s.tenants) {
        const std::string name = TenantLabel(table.get(), t.tenant);
        const std::vector<ClientMetric::Label> ram = {{"tenant", name}, {"tier", "ram"}};
        const std::vector<ClientMetric::Label> disk = {{"tenant", name}, {"tier", "disk"}};
        const std::vector<ClientMetric::Label> only = {{"tenant", name}};
        add("kvtier_tenant_bytes", Sample(static_cast<double>(t.ram_bytes), ram));
        add("kvtier_tenant_bytes", Sample(static_cast<double>(t.disk_bytes), disk));
        add("kvtier_tenant_pages", Sample(static_cast<double>(t.ram_pages), ram));
        add("kvtier_tenant_pages", Sample(static_cast<double>(t.disk_pages), disk));
        add("kvtier_tenant_quota_bytes", Sample(static_cast<double>(t.quotas.max_ram_bytes), ram));
        add("kvtier_tenant_quota_bytes",
            Sample(static_cast<double>(t.quotas.max_disk_bytes), disk));
        add("kvtier_tenant_pins", Sample(static_cast<double>(t.pins), only));
        add("kvtier_tenant_pinned_bytes", Sample(static_cast<double>(t.pinned_bytes), only));
        add("kvtier_tenant_quota_refusals_total",
            Sample(static_cast<double>(t.quota_refusals), only));
      }
    }
    if (service != nullptr) {
      const ServiceCounters::Snapshot c = service->counters();
      for (size_t p = 0; p < kBytePaths; ++p) {
        const std::vector<ClientMetric::Label> l = {
            {"path", BytePathName(static_cast<BytePath>(p))}};
        const BytePath path = static_cast<BytePath>(p);
        if (path != BytePath::kMapped) {
          add("kvtier_put_bytes_total", Sample(static_cast<double>(c.put_bytes[p]), l));
        }
        if (path != BytePath::kReplica) {
          add("kvtier_get_bytes_total", Sample(static_cast<double>(c.get_bytes[p]), l));
        }
      }
      add("kvtier_lookups_total", Sample(static_cast<double>(c.lookups)));
      add("kvtier_lookup_chain_pages_total", Sample(static_cast<double>(c.lookup_chain_pages)));
      add("kvtier_lookup_prefix_pages_total",
          Sample(static_cast<double>(c.lookup_prefix_pages)));
      ClientMetric h;
      h.histogram.sample_count = c.lookups;
      h.histogram.sample_sum = static_cast<double>(c.lookup_prefix_pages);
      uint64_t cumulative = 0;
      for (size_t b = 0; b + 1 < ServiceCounters::kPrefixBuckets; ++b) {
        cumulative += c.prefix_buckets[b];
        // Bucket b holds prefixes below the next bucket's floor.
        h.histogram.bucket.push_back(ClientMetric::Bucket{
            .cumulative_count = cumulative,
            .upper_bound = static_cast<double>(ServiceCounters::BucketFloor(b + 1) - 1)});
      }
      h.histogram.bucket.push_back(ClientMetric::Bucket{
          .cumulative_count = c.lookups, .upper_bound = std::numeric_limits<double>::infinity()});
      add("kvtier_lookup_prefix_pages", std::move(h));
      const CacheEventFeed* feed = service->cache_events();
      add("kvtier_event_watchers",
          Sample(feed != nullptr ? static_cast<double>(feed->watchers()) : 0.0));
    }
    if (membership != nullptr) {
      std::map<std::string, int> by_state = {{"joining", 0}, {"up", 0}, {"draining", 0},
                                             {"down", 0}};
      for (const v1::Member& m : membership->View()->members) ++by_state[StateLabel(m.state())];
      for (const auto& [state, n] : by_state) {
        add("kvtier_cluster_members", Sample(n, {{"state", state}}));
      }
    }
    if (replicator != nullptr) {
      const cluster::ReplicatorStats r = replicator->stats();
      add("kvtier_replication_rounds_total", Sample(static_cast<double>(r.rounds)));
      add("kvtier_replication_pages_copied_total", Sample(static_cast<double>(r.pages_copied)));
      add("kvtier_replication_unpinned_pages_copied_total",
          Sample(static_cast<double>(r.unpinned_pages_copied)));
      add("kvtier_replication_copy_failures_total",
          Sample(static_cast<double>(r.copy_failures)));
    }
    std::vector<MetricFamily> out;
    for (const FamilyInfo& info : kFamilies) {
      auto it = families.find(info.name);
      if (it == families.end()) continue;
      it->second.name = info.name;
      it->second.help = info.help;
      it->second.type = info.type;
      out.push_back(std::move(it->second));
    }
    return out;
  }

 private:
  const ServerMetrics* const owner_;
};

ServerMetrics::ServerMetrics()
    : registry_(std::make_shared<prometheus::Registry>()),
      collector_(std::make_shared<Collector>(this)),
      rpcs_(std::make_shared<RpcRecorder>(*registry_)) {}

ServerMetrics::~ServerMetrics() = default;

absl::StatusOr<std::unique_ptr<ServerMetrics>> ServerMetrics::Start(
    const std::string& listen, const access::AccessControl* access) {
  std::unique_ptr<ServerMetrics> metrics(new ServerMetrics());
  if (listen.empty()) return metrics;
  ASSIGN_OR_RETURN(MetricsEndpoint endpoint, StartMetricsEndpoint(listen));
  metrics->exposer_ = std::move(endpoint.exposer);
  metrics->port_ = endpoint.port;
  if (access != nullptr) {
    // Checked against the current table at every scrape, so a reload
    // admits and revokes metrics credentials as it does the others.
    metrics->exposer_->RegisterAuth(
        [access](const std::string& user, const std::string& password) {
          const std::optional<access::Identity> identity = access->Current()->FindToken(password);
          return identity.has_value() && identity->role == access::Role::kMetrics &&
                 identity->tenant == user;
        },
        "kvtier", "/metrics");
  }
  metrics->exposer_->RegisterCollectable(metrics->registry_);
  metrics->exposer_->RegisterCollectable(metrics->collector_);
  return metrics;
}

std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>
ServerMetrics::RpcInterceptorFactory() {
  return std::make_unique<kvtier::store::RpcInterceptorFactory>(rpcs_);
}

void ServerMetrics::SetStore(Store* store, const KvStoreService* service,
                             const access::AccessControl* access) {
  absl::MutexLock lock(&mu_);
  store_ = store;
  service_ = service;
  access_ = access;
}

void ServerMetrics::SetCluster(const cluster::Membership* membership,
                               const cluster::Replicator* replicator) {
  absl::MutexLock lock(&mu_);
  membership_ = membership;
  replicator_ = replicator;
}

std::string ServerMetrics::Render() const {
  std::vector<MetricFamily> families = registry_->Collect();
  std::vector<MetricFamily> scraped = collector_->Collect();
  families.insert(families.end(), std::make_move_iterator(scraped.begin()),
                  std::make_move_iterator(scraped.end()));
  return prometheus::TextSerializer().Serialize(families);
}

std::vector<std::string> ServerMetrics::FamilyNames() {
  std::vector<std::string> names = {kRpcDuration, kRpcs};
  for (const FamilyInfo& info : kFamilies) names.emplace_back(info.name);
  return names;
}

}  // namespace kvtier::store
