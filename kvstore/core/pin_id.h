// PinId: the id a client holds for a pin (common/random_id.h), meaningful
// only to the tenant that created the pin (the store looks pins up by
// tenant and id together).
#ifndef KVTIER_KVSTORE_CORE_PIN_ID_H_
#define KVTIER_KVSTORE_CORE_PIN_ID_H_

#include "absl/strings/string_view.h"
#include "common/random_id.h"

namespace kvtier::store {

struct PinIdTag {
  static constexpr absl::string_view kField = "pin_id";
};
using PinId = RandomId<PinIdTag>;

}  // namespace kvtier::store

#endif  // KVTIER_KVSTORE_CORE_PIN_ID_H_
