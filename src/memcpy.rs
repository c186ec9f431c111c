//! `memcpy` and `memmove` for the static musl binary on x86_64.
//!
//! musl's x86_64 `memcpy` starts every copy with `rep movsq`, whose start-up cost is tens
//! of cycles, and finishes with a byte loop. A server makes small copies by the thousand
//! (header values, log fields, formatting): `perf record` on the release binary under
//! `wrk` put a sixth of a `GET /`'s CPU in musl's `memcpy` (docs/performance.md). These
//! copy up to 128 bytes with a few unaligned loads and stores, reading everything before
//! writing anything (so overlap is harmless), and leave longer copies to `rep movsq`,
//! which is fast on aligned and unaligned data alike. The uv project measured the same
//! cost of musl's `memcpy` (astral-sh/uv#10610).
//!
//! Exported under the C names only in the musl build: the linker then takes these and
//! never pulls musl's from libc.a. Elsewhere they are ordinary functions, tested against
//! the platform's own.

#![allow(unsafe_code)]

#[cfg(target_arch = "x86_64")]
use core::arch::x86_64::__m128i;

/// # Safety
/// As C's `memcpy`: `src` readable and `dest` writable for `n` bytes.
#[cfg(target_arch = "x86_64")]
#[cfg_attr(target_env = "musl", unsafe(no_mangle))]
pub unsafe extern "C" fn memcpy(dest: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    // SAFETY: the caller's promise; `copy` also allows overlap.
    unsafe { copy(dest, src, n) };
    dest
}

/// # Safety
/// As C's `memmove`: `src` readable and `dest` writable for `n` bytes; they may overlap.
#[cfg(target_arch = "x86_64")]
#[cfg_attr(target_env = "musl", unsafe(no_mangle))]
pub unsafe extern "C" fn memmove(dest: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    // SAFETY: as above.
    unsafe { copy(dest, src, n) };
    dest
}

#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn load<T: Copy>(p: *const u8) -> T {
    // SAFETY: the caller keeps `p..p + size_of::<T>()` inside the source.
    unsafe { p.cast::<T>().read_unaligned() }
}

#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn store<T>(p: *mut u8, value: T) {
    // SAFETY: the caller keeps `p..p + size_of::<T>()` inside the destination.
    unsafe { p.cast::<T>().write_unaligned(value) }
}

/// Copies `n` bytes; right for overlapping ranges too.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn copy(dest: *mut u8, src: *const u8, n: usize) {
    // SAFETY (every arm): each access lies within the first `n` bytes of its range;
    // the head and the tail of a range may overlap each other, which is why everything
    // is read before anything is written.
    unsafe {
        match n {
            0 => {}
            1..=3 => {
                let (a, b, c) = (*src, *src.add(n / 2), *src.add(n - 1));
                *dest = a;
                *dest.add(n / 2) = b;
                *dest.add(n - 1) = c;
            }
            4..=7 => {
                let (a, b): (u32, u32) = (load(src), load(src.add(n - 4)));
                store(dest, a);
                store(dest.add(n - 4), b);
            }
            8..=15 => {
                let (a, b): (u64, u64) = (load(src), load(src.add(n - 8)));
                store(dest, a);
                store(dest.add(n - 8), b);
            }
            16..=32 => {
                let (a, b): (__m128i, __m128i) = (load(src), load(src.add(n - 16)));
                store(dest, a);
                store(dest.add(n - 16), b);
            }
            33..=64 => {
                let head: [__m128i; 2] = load(src);
                let tail: [__m128i; 2] = load(src.add(n - 32));
                store(dest, head);
                store(dest.add(n - 32), tail);
            }
            65..=128 => {
                let head: [__m128i; 4] = load(src);
                let tail: [__m128i; 4] = load(src.add(n - 64));
                store(dest, head);
                store(dest.add(n - 64), tail);
            }
            _ if (dest as usize).wrapping_sub(src as usize) >= n => forward(dest, src, n),
            _ => backward(dest, src, n),
        }
    }
}

/// More than 128 bytes, the destination not inside the source's span ahead of it: the
/// last 8 bytes are read first and written last, `rep movsq` copies the rest forward.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn forward(dest: *mut u8, src: *const u8, n: usize) {
    // SAFETY: `n > 128`; the 8-byte words cover `0..8 * (n / 8)`, the tail `n - 8..n`.
    unsafe {
        let tail: u64 = load(src.add(n - 8));
        core::arch::asm!(
            "rep movsq",
            inout("rdi") dest => _,
            inout("rsi") src => _,
            inout("rcx") n / 8 => _,
            options(nostack, preserves_flags)
        );
        store(dest.add(n - 8), tail);
    }
}

/// More than 128 bytes, the destination ahead of the source and overlapping it: the
/// first 8 bytes are read first and written last, `rep movsq` copies the rest backward.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn backward(dest: *mut u8, src: *const u8, n: usize) {
    // SAFETY: `n > 128`; the words cover `n % 8..n` from the end down, the head `0..8`.
    // The direction flag is set for the copy and cleared again, as the ABI requires.
    unsafe {
        let head: u64 = load(src);
        core::arch::asm!(
            "std",
            "rep movsq",
            "cld",
            inout("rdi") dest.add(n - 8) => _,
            inout("rsi") src.add(n - 8) => _,
            inout("rcx") n / 8 => _,
            options(nostack)
        );
        store(dest, head);
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 + 7) as u8).collect()
    }

    #[test]
    fn copies_every_length_at_every_alignment() {
        let source = pattern(700);
        for n in 0..600 {
            for (from, to) in [(0, 0), (1, 3), (5, 0), (7, 9), (15, 1)] {
                let mut dest = vec![0xAAu8; 700];
                // SAFETY: both ranges lie inside their vectors.
                unsafe { memcpy(dest.as_mut_ptr().add(to), source.as_ptr().add(from), n) };
                assert_eq!(&dest[to..to + n], &source[from..from + n], "n={n}");
                assert!(dest[..to].iter().all(|&b| b == 0xAA), "wrote before, n={n}");
                assert!(
                    dest[to + n..].iter().all(|&b| b == 0xAA),
                    "wrote after, n={n}"
                );
            }
        }
    }

    #[test]
    fn moves_overlapping_ranges_both_ways() {
        for n in [
            1, 2, 3, 5, 8, 13, 16, 17, 31, 33, 64, 65, 100, 128, 129, 200, 513,
        ] {
            for shift in [1usize, 2, 7, 8, 9, 16, 63, 130] {
                let original = pattern(n + shift);
                // Up: the destination ahead of the source.
                let mut up = original.clone();
                let mut expected = original.clone();
                expected.copy_within(0..n, shift);
                // SAFETY: both ranges lie inside the vector.
                unsafe { memmove(up.as_mut_ptr().add(shift), up.as_ptr(), n) };
                assert_eq!(up, expected, "up n={n} shift={shift}");
                // Down: the destination behind the source.
                let mut down = original.clone();
                let mut expected = original.clone();
                expected.copy_within(shift..shift + n, 0);
                // SAFETY: as above.
                unsafe { memmove(down.as_mut_ptr(), down.as_ptr().add(shift), n) };
                assert_eq!(down, expected, "down n={n} shift={shift}");
            }
        }
    }
}
