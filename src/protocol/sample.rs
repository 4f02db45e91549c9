//! Random but well-formed field values, for property tests, fuzz seeds and the simulator's
//! hostile-input generators. Driven by any `rand` RNG, so a seed reproduces a sample.

use rand::{Rng, RngExt};

use super::errno::Errno;
use super::types::*;
use super::wire::{Data, DirentList, MAXWELEM};

/// A value that can be drawn at random.
pub trait Sample {
    /// A value drawn from `rng`.
    fn sample<R: Rng + ?Sized>(rng: &mut R) -> Self;
}

macro_rules! sample_int {
    ($($t:ty),*) => {$(
        impl Sample for $t {
            fn sample<R: Rng + ?Sized>(rng: &mut R) -> Self {
                // Edge values often: they are where codecs break.
                match rng.random_range(0..4u8) {
                    0 => 0,
                    1 => <$t>::MAX,
                    _ => rng.random(),
                }
            }
        }
    )*};
}
sample_int!(u8, u16, u32, u64);

macro_rules! sample_newtype {
    ($($t:ident($inner:ty)),*) => {$(
        impl Sample for $t {
            fn sample<R: Rng + ?Sized>(rng: &mut R) -> Self {
                $t(<$inner>::sample(rng))
            }
        }
    )*};
}
super::types::wire_newtypes!(sample_newtype);

macro_rules! sample_struct {
    ($t:ident { $($f:ident),* }) => {
        impl Sample for $t {
            fn sample<R: Rng + ?Sized>(rng: &mut R) -> Self {
                $t { $($f: Sample::sample(rng)),* }
            }
        }
    };
}

super::types::wire_structs!(sample_struct);

fn bytes<R: Rng + ?Sized>(rng: &mut R, max: usize) -> Vec<u8> {
    let len = rng.random_range(0..=max);
    (0..len).map(|_| rng.random()).collect()
}

impl Sample for P9String {
    fn sample<R: Rng + ?Sized>(rng: &mut R) -> Self {
        P9String(bytes(rng, 12))
    }
}

impl Sample for Data {
    fn sample<R: Rng + ?Sized>(rng: &mut R) -> Self {
        Data(bytes(rng, 64))
    }
}

impl Sample for LockType {
    fn sample<R: Rng + ?Sized>(rng: &mut R) -> Self {
        LockType::from_u8(rng.random_range(0..3)).expect("0..3 are lock types")
    }
}

impl Sample for LockStatus {
    fn sample<R: Rng + ?Sized>(rng: &mut R) -> Self {
        LockStatus::from_u8(rng.random_range(0..4)).expect("0..4 are lock statuses")
    }
}

impl<T: Sample> Sample for Vec<T> {
    fn sample<R: Rng + ?Sized>(rng: &mut R) -> Self {
        let n = rng.random_range(0..=MAXWELEM);
        (0..n).map(|_| T::sample(rng)).collect()
    }
}

impl Sample for DirentList {
    fn sample<R: Rng + ?Sized>(rng: &mut R) -> Self {
        let n = rng.random_range(0..5);
        DirentList((0..n).map(|_| Dirent::sample(rng)).collect())
    }
}
