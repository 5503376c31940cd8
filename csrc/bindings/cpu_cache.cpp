// A caching allocator for large CPU tensors (see cpu_cache.h).
//
// Why: a training step allocates and frees the same few dozen large tensors (samples x
// features) every step. glibc serves allocations above its mmap threshold with fresh
// mappings, so every step pays a page fault per 4 KiB page of every one of them (tens of
// milliseconds a step, and the kernel's page zeroing) and then unmaps them again. Keeping the
// freed blocks and handing them out again removes all of that.
//
// How: blocks of at least kMinBlock bytes come from posix_memalign (2 MiB-aligned, with a
// transparent-huge-page hint from kHugeBlock on) behind a 64-byte header holding the block's
// size; freed ones go to a best-fit free list (a request takes the smallest free block that
// holds it when that block is at most 1/4 larger). The limit bounds the free (cached) bytes
// only: a freed block that would exceed it goes back to the system. Smaller requests are
// plain 64-byte-aligned mallocs behind the same header (torch's own default allocator does the
// same, minus the header), so that every pointer this allocator hands out is its own.
#include "cpu_cache.h"

#include <c10/core/CPUAllocator.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>

#if defined(__linux__)
#include <pthread.h>
#include <sys/mman.h>
#endif

namespace fields {
namespace {

constexpr size_t kHeader = 64;                 // keeps the data 64-byte aligned
constexpr size_t kMinBlock = size_t{1} << 20;  // smaller requests: plain mallocs
constexpr size_t kHugeBlock = size_t{4} << 20;
constexpr size_t kAlign = size_t{2} << 20;

struct Header {
  size_t size;   // usable bytes after the header
  size_t magic;  // kMagic: the block is ours
};
constexpr size_t kMagic = 0x6669656c64735f43ull;       // a cached-size block
constexpr size_t kMagicSmall = 0x6669656c64735f73ull;  // a small block (plain malloc)

class CachingCpuAllocator final : public at::Allocator {
 public:
  CachingCpuAllocator() = default;

  at::DataPtr allocate(size_t n) override {
    if (n == 0) return {nullptr, nullptr, &release, at::Device(at::DeviceType::CPU)};
    void* data = n < kMinBlock ? small(n) : take(n);
    return {data, data, &release, at::Device(at::DeviceType::CPU)};
  }

  at::DeleterFnPtr raw_deleter() const override { return &release; }

  void copy_data(void* dest, const void* src, std::size_t count) const override {
    default_copy_data(dest, src, count);
  }

  void set_limit(size_t limit) {
    std::lock_guard<std::mutex> lock(mu_);
    limit_ = limit;
    trim_locked(limit_);
  }

  CpuCacheStats stats() {
    std::lock_guard<std::mutex> lock(mu_);
    return stats_;
  }

  void empty() {
    std::lock_guard<std::mutex> lock(mu_);
    trim_locked(0);
  }

  void lock() { mu_.lock(); }
  void unlock() { mu_.unlock(); }

  static void release(void* data);

 private:
  void* take(size_t n) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = free_.lower_bound(n);
      if (it != free_.end() && it->first - n <= n / 4) {
        void* data = it->second;
        stats_.cached_bytes -= it->first;
        stats_.hits += 1;
        free_.erase(it);
        return data;
      }
      stats_.misses += 1;
    }
    // Round fresh blocks up to 64 KiB so that slowly growing requests fit earlier blocks.
    const size_t size = (n + 0xFFFF) & ~size_t{0xFFFF};
    void* base = nullptr;
    if (posix_memalign(&base, kAlign, size + kAlign) != 0 || base == nullptr) {
      // Out of memory: give the cache back and try once more before failing like torch does.
      empty();
      if (posix_memalign(&base, kAlign, size + kAlign) != 0 || base == nullptr)
        TORCH_CHECK(false, "fields cpu cache: out of memory allocating ", size, " bytes");
    }
    // The header sits just before the 2 MiB boundary where the data starts.
    char* data = static_cast<char*>(base) + kAlign;
    auto* h = reinterpret_cast<Header*>(data - kHeader);
    h->size = size;
    h->magic = kMagic;
    // base is kept in the header's spare bytes for free()
    *reinterpret_cast<void**>(data - kHeader + sizeof(Header)) = base;
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    if (size >= kHugeBlock) madvise(data, size & ~(kAlign - 1), MADV_HUGEPAGE);
#endif
    return data;
  }

  void give_back(void* data) {
    auto* h = reinterpret_cast<Header*>(static_cast<char*>(data) - kHeader);
    if (h->magic == kMagicSmall) {
      std::free(base_of(data));
      return;
    }
    if (h->magic != kMagic) {  // a deleter cannot throw
      std::fprintf(stderr, "fields cpu cache: freeing a block it did not allocate (%p)\n", data);
      std::abort();
    }
    const size_t size = h->size;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stats_.cached_bytes + size <= limit_) {
        free_.emplace(size, data);
        stats_.cached_bytes += size;
        return;
      }
    }
    std::free(base_of(data));
  }

  // Small blocks get the same header (so that raw_allocate / raw_deallocate, which ideep uses,
  // find every pointer's kind) and go straight back to malloc when freed.
  static void* small(size_t n) {
    void* base = nullptr;
    if (posix_memalign(&base, kHeader, n + kHeader) != 0 || base == nullptr)
      TORCH_CHECK(false, "fields cpu cache: out of memory allocating ", n, " bytes");
    char* data = static_cast<char*>(base) + kHeader;
    auto* h = reinterpret_cast<Header*>(base);
    h->size = n;
    h->magic = kMagicSmall;
    *reinterpret_cast<void**>(data - kHeader + sizeof(Header)) = base;
    return data;
  }

  static void* base_of(void* data) {
    return *reinterpret_cast<void**>(static_cast<char*>(data) - kHeader + sizeof(Header));
  }

  // Frees the largest cached blocks until at most `keep` bytes stay cached.
  void trim_locked(size_t keep) {
    while (stats_.cached_bytes > keep && !free_.empty()) {
      auto it = std::prev(free_.end());
      stats_.cached_bytes -= it->first;
      std::free(base_of(it->second));
      free_.erase(it);
    }
  }

  std::mutex mu_;
  std::multimap<size_t, void*> free_;
  size_t limit_ = 0;
  CpuCacheStats stats_;
};

// Never destroyed: tensors freed while the process exits still find it.
CachingCpuAllocator* g_cache = nullptr;

void CachingCpuAllocator::release(void* data) {
  if (data != nullptr) g_cache->give_back(data);
}

}  // namespace

bool install_cpu_cache(int64_t limit_bytes) {
  static std::once_flag once;
  std::call_once(once, [] {
    g_cache = new CachingCpuAllocator();
#if defined(__linux__)
    // A fork (e.g. a data-loader worker) while another thread holds the lock must not leave
    // the child's copy locked.
    pthread_atfork([] { g_cache->lock(); }, [] { g_cache->unlock(); },
                   [] { g_cache->unlock(); });
#endif
  });
  g_cache->set_limit(static_cast<size_t>(limit_bytes < 0 ? 0 : limit_bytes));
  if (c10::GetCPUAllocator() == g_cache) return false;
  // priority 1: above torch's own registration (0), so the default stays replaced
  c10::SetCPUAllocator(g_cache, /*priority=*/1);
  return c10::GetCPUAllocator() == g_cache;
}

bool cpu_cache_installed() { return g_cache != nullptr && c10::GetCPUAllocator() == g_cache; }

std::vector<int64_t> cpu_cache_stats() {
  if (g_cache == nullptr) return {0, 0, 0};
  const CpuCacheStats s = g_cache->stats();
  return {static_cast<int64_t>(s.cached_bytes), static_cast<int64_t>(s.hits),
          static_cast<int64_t>(s.misses)};
}

void cpu_cache_empty() {
  if (g_cache != nullptr) g_cache->empty();
}

}  // namespace fields
