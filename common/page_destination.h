// PageDestination: where a page's bytes may land on their way back from a
// store: one buffer, or pieces of several buffers that the page's bytes
// fill in order (a KV page's K half and V half in two row arrays), so that
// a reader that keeps K and V apart takes a page in one copy.
#ifndef KVTIER_COMMON_PAGE_DESTINATION_H_
#define KVTIER_COMMON_PAGE_DESTINATION_H_

#include <cstddef>
#include <cstdint>

#include "absl/container/inlined_vector.h"
#include "absl/types/span.h"

namespace kvtier {

struct PageDestination {
  absl::InlinedVector<absl::Span<uint8_t>, 2> pieces;

  // The pieces' total: the size of the only page that may land here.
  size_t bytes() const {
    size_t n = 0;
    for (const absl::Span<uint8_t>& piece : pieces) n += piece.size();
    return n;
  }
};

}  // namespace kvtier

#endif  // KVTIER_COMMON_PAGE_DESTINATION_H_
