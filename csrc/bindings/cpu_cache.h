// A caching allocator for large CPU tensors, installed as torch's CPU allocator.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace fields {

struct CpuCacheStats {
  size_t cached_bytes = 0;  // free blocks held for reuse
  size_t hits = 0;          // requests served from the free list
  size_t misses = 0;        // requests that needed fresh memory
};

// Makes the caching allocator torch's CPU allocator (it caches tensors of 1 MiB or more;
// smaller ones are plain aligned mallocs), holding at most limit_bytes of freed blocks. Calling it again only
// changes the limit. Returns whether this call installed it.
bool install_cpu_cache(int64_t limit_bytes);
bool cpu_cache_installed();
// {cached bytes, hits, misses}
std::vector<int64_t> cpu_cache_stats();
// Returns every cached block to the system.
void cpu_cache_empty();

}  // namespace fields
