//! P-256 points for the key agreement: Jacobian and affine coordinates,
//! the doubling and mixed addition of the Explicit-Formulas Database, the
//! signed radix-16 window with masked table scans, batched inversion
//! (Montgomery's trick) and the generator's table. The module docs of
//! [`super`] give the constant-time argument and the exceptional cases.

use zeroize::Zeroize as _;

use super::field::{bit_mask, zero_mask, Fe, GX_BE, GY_BE};
use super::{EcdhError, SecretScalar};

/// A point in Jacobian coordinates (`x = X/Z^2`, `y = Y/Z^3`); `Z = 0` is the
/// identity.
#[derive(Clone, Copy, Debug)]
pub(super) struct Jacobian {
    pub(super) x: Fe,
    pub(super) y: Fe,
    pub(super) z: Fe,
}

impl Jacobian {
    /// `dbl-2001-b` (a = -3): 3M + 5S. The identity stays the identity.
    #[inline(never)]
    pub(super) fn double(&self) -> Jacobian {
        let delta = self.z.square();
        let gamma = self.y.square();
        let beta = self.x.mul(&gamma);
        let t = self.x.sub(&delta).mul(&self.x.add(&delta));
        let alpha = t.double().add(&t);
        let beta4 = beta.double().double();
        let x3 = alpha.square().sub(&beta4.double());
        let z3 = self.y.add(&self.z).square().sub(&gamma).sub(&delta);
        let gamma2_8 = gamma.square().double().double().double();
        let y3 = alpha.mul(&beta4.sub(&x3)).sub(&gamma2_8);
        Jacobian {
            x: x3,
            y: y3,
            z: z3,
        }
    }

    #[inline(always)]
    pub(super) fn select(mask: u64, a: &Jacobian, b: &Jacobian) -> Jacobian {
        Jacobian {
            x: Fe::select(mask, &a.x, &b.x),
            y: Fe::select(mask, &a.y, &b.y),
            z: Fe::select(mask, &a.z, &b.z),
        }
    }
}

/// Signed radix-16 digits of a 256-bit big-endian scalar, least
/// significant first: `k = Σ d_i·16^i`, `d_i ∈ [-8, 7]`, 65 digits.
pub(super) fn radix16(scalar_be: &[u8; 32]) -> [i8; 65] {
    let mut d = [0i8; 65];
    for i in 0..32 {
        let byte = scalar_be[31 - i];
        d[2 * i] = (byte & 0x0f) as i8;
        d[2 * i + 1] = (byte >> 4) as i8;
    }
    let mut carry = 0i8;
    for digit in d.iter_mut().take(64) {
        let v = *digit + carry;
        carry = (v + 8) >> 4;
        *digit = v - (carry << 4);
    }
    d[64] = carry;
    d
}

/// A table entry (an affine point: the batch makes every table affine):
/// a masked select, a `y` to negate, and an addition to a Jacobian
/// accumulator.
pub(super) trait TableEntry: Copy {
    fn select(mask: u64, a: &Self, b: &Self) -> Self;
    fn y_mut(&mut self) -> &mut Fe;
    /// `acc + self`, with the exceptional cases of [`Jacobian::add_affine`].
    fn added_to(&self, acc: &Jacobian) -> Jacobian;
    fn to_jacobian(&self) -> Jacobian;
}

/// The entry for digit `d` from a table of `1·P … 8·P` (`d·P`), read by
/// scanning every entry and negating `y` under a mask; the second value is
/// all ones when `d = 0` (the returned point is then meaningless).
#[inline(always)]
pub(super) fn lookup<P: TableEntry>(table: &[P], d: i8) -> (P, u64) {
    let sign = ((d as u8) >> 7) as u64; // 1 when negative
    let abs = ((d as i16 ^ -(sign as i16)) + sign as i16) as u64; // |d|
    let mut out = table[0];
    for (j, entry) in table.iter().enumerate() {
        let hit = zero_mask((j as u64 + 1) ^ abs);
        out = P::select(hit, entry, &out);
    }
    let y = *out.y_mut();
    *out.y_mut() = Fe::select(bit_mask(sign), &y.neg(), &y);
    (out, zero_mask(abs))
}

/// `[1·R, …, 8·R]` for `R = (x, y)`, in Jacobian coordinates. `R` is
/// affine, so the odd multiples are mixed additions (`2R`, `4R`, `6R` are
/// never `±R`: `R` has order `n`).
pub(super) fn point_table(x: &[u8; 32], y: &[u8; 32]) -> [Jacobian; 8] {
    let r = Affine {
        x: Fe::from_be_bytes(x),
        y: Fe::from_be_bytes(y),
    };
    let base = Jacobian::from_affine(&r);
    let mut table = [base; 8];
    table[1] = base.double();
    table[2] = table[1].add_affine(&r);
    table[3] = table[1].double();
    table[4] = table[3].add_affine(&r);
    table[5] = table[2].double();
    table[6] = table[5].add_affine(&r);
    table[7] = table[3].double();
    table
}

/// `k·R` from the table `[1·R, …, 8·R]` (affine, for the cheaper
/// mixed additions): signed radix-16 digits from the top, four doublings
/// and one masked addition per digit. See the module docs for the
/// exceptional cases.
pub(super) fn window_mul<P: TableEntry>(scalar_be: &[u8; 32], table: &[P]) -> Jacobian {
    let mut digits = radix16(scalar_be);
    let mut acc = Jacobian {
        x: Fe::ONE,
        y: Fe::ONE,
        z: Fe::ZERO,
    };
    for i in (0..65).rev() {
        if i != 64 {
            acc = acc.double().double().double().double();
        }
        // Only the last addition can meet acc == point (see module docs).
        acc = add_digit(&acc, table, digits[i], i == 0);
    }
    digits.zeroize();
    acc
}

/// One masked step of a scalar multiplication: `acc + d·P` for the table
/// `[1·P, …, 8·P]`, `acc` itself when `d = 0`, `d·P` when `acc` is the
/// identity. With `last`, `acc == d·P` is handled too (by the doubling,
/// computed always and selected under a mask). Shared by `k·G` and `k·R`
/// (the component has a size budget; a call per digit costs nothing
/// measurable).
#[inline(never)]
pub(super) fn add_digit<P: TableEntry>(acc: &Jacobian, table: &[P], d: i8, last: bool) -> Jacobian {
    let (point, digit_zero) = lookup(table, d);
    let acc_identity = acc.z.is_zero_mask();
    let mut sum = point.added_to(acc);
    if last {
        let same = sum.x.is_zero_mask() & sum.y.is_zero_mask() & sum.z.is_zero_mask();
        let doubled = point.to_jacobian().double();
        sum = Jacobian::select(same & !acc_identity, &doubled, &sum);
    }
    let sum = Jacobian::select(acc_identity, &point.to_jacobian(), &sum);
    Jacobian::select(digit_zero, acc, &sum)
}

/// An affine point in Montgomery form (never the identity).
#[derive(Clone, Copy, Debug)]
pub(super) struct Affine {
    pub(super) x: Fe,
    pub(super) y: Fe,
}

impl Jacobian {
    /// `madd-2007-bl`: `self + other` with `other` affine, 7M + 4S. Correct
    /// when `self` is not the identity and `self != other`; `self == other`
    /// gives X = Y = Z = 0 and `self == -other` gives Z = 0.
    #[inline(never)]
    pub(super) fn add_affine(&self, other: &Affine) -> Jacobian {
        let z1z1 = self.z.square();
        let u2 = other.x.mul(&z1z1);
        let s2 = other.y.mul(&self.z).mul(&z1z1);
        let h = u2.sub(&self.x);
        let hh = h.square();
        let i = hh.double().double();
        let j = h.mul(&i);
        let r = s2.sub(&self.y).double();
        let v = self.x.mul(&i);
        let x3 = r.square().sub(&j).sub(&v.double());
        let y3 = r.mul(&v.sub(&x3)).sub(&self.y.mul(&j).double());
        let z3 = self.z.add(&h).square().sub(&z1z1).sub(&hh);
        Jacobian {
            x: x3,
            y: y3,
            z: z3,
        }
    }

    pub(super) fn from_affine(p: &Affine) -> Jacobian {
        Jacobian {
            x: p.x,
            y: p.y,
            z: Fe::ONE,
        }
    }

    /// The affine form (the caller guarantees `Z != 0`).
    pub(super) fn to_affine(self) -> Affine {
        affine_with(&self, &self.z.invert())
    }
}

/// The inverses of the `Z`s of `points` with one field inversion
/// (Montgomery's trick: `3(N-1)` multiplications instead of `N-1` more
/// inversions).
///
/// A zero `Z` (an identity point) makes the running product zero, and
/// every "inverse" after it would be zero too. The product is computed in
/// full whatever the values, and only then is it tested, once, so the time
/// does not tell which point was the identity; a zero refuses the whole
/// batch.
pub(super) fn z_inverses(points: &[Jacobian]) -> Result<Vec<Fe>, EcdhError> {
    // out[i] = Z_0 · ... · Z_i, then, from the top, 1 / Z_i.
    let mut out: Vec<Fe> = Vec::with_capacity(points.len());
    let mut running = Fe::ONE;
    for p in points {
        running = running.mul(&p.z);
        out.push(running);
    }
    if running.is_zero_mask() != 0 {
        return Err(EcdhError::IdentityInBatch);
    }
    let mut inv = running.invert(); // 1 / (Z_0 · ... · Z_i)
    for i in (0..points.len()).rev() {
        let z_inv = if i == 0 { inv } else { inv.mul(&out[i - 1]) };
        inv = inv.mul(&points[i].z);
        out[i] = z_inv;
    }
    Ok(out)
}

/// The affine form of `p` given `1/Z`.
pub(super) fn affine_with(p: &Jacobian, z_inv: &Fe) -> Affine {
    let z_inv2 = z_inv.square();
    Affine {
        x: p.x.mul(&z_inv2),
        y: p.y.mul(&z_inv2.mul(z_inv)),
    }
}

/// Affine forms of `points` with one field inversion.
///
/// # Errors
/// [`EcdhError::IdentityInBatch`] when one of them is the identity.
pub(super) fn batch_to_affine(points: &[Jacobian]) -> Result<Vec<Affine>, EcdhError> {
    Ok(points
        .iter()
        .zip(z_inverses(points)?)
        .map(|(p, z_inv)| affine_with(p, &z_inv))
        .collect())
}

/// `table[i][j] = (j + 1)·16^i·G` for the 65 signed radix-16 digits.
pub(super) type BaseTable = [[Affine; 8]; 65];

/// The generator's table, computed once per instance on first use (about
/// 0.6 ms natively: 65 batch inversions).
pub(super) fn base_table() -> &'static BaseTable {
    pub(super) static TABLE: std::sync::OnceLock<Box<BaseTable>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        let mut window = Affine {
            x: Fe::from_be_bytes(&GX_BE),
            y: Fe::from_be_bytes(&GY_BE),
        };
        let mut table = Box::new(
            [[Affine {
                x: Fe::ZERO,
                y: Fe::ZERO,
            }; 8]; 65],
        );
        for row in table.iter_mut() {
            let base = Jacobian::from_affine(&window);
            let mut multiples = [base; 8];
            multiples[1] = base.double();
            for j in 2..8 {
                multiples[j] = if j % 2 == 1 {
                    multiples[j / 2].double()
                } else {
                    multiples[j - 1].add_affine(&window)
                };
            }
            // The eight multiples and 16·window, normalised with one
            // inversion (Montgomery's trick).
            let mut points = [base; 9];
            points[..8].copy_from_slice(&multiples);
            points[8] = multiples[7].double();
            // j·16^i·G for j <= 16 is never the identity (16 < n).
            let affine = batch_to_affine(&points)
                .expect("multiples of the generator below n are not the identity");
            row.copy_from_slice(&affine[..8]);
            window = affine[8];
        }
        table
    })
}

impl TableEntry for Affine {
    #[inline(always)]
    fn select(mask: u64, a: &Self, b: &Self) -> Self {
        Affine {
            x: Fe::select(mask, &a.x, &b.x),
            y: Fe::select(mask, &a.y, &b.y),
        }
    }

    #[inline(always)]
    fn y_mut(&mut self) -> &mut Fe {
        &mut self.y
    }

    #[inline(always)]
    fn added_to(&self, acc: &Jacobian) -> Jacobian {
        acc.add_affine(self)
    }

    #[inline(always)]
    fn to_jacobian(&self) -> Jacobian {
        Jacobian::from_affine(self)
    }
}

/// `0x04 || x || y`.
pub(super) fn encode_uncompressed(p: &Affine) -> [u8; 65] {
    let mut out = [0u8; 65];
    out[0] = 0x04;
    out[1..33].copy_from_slice(&p.x.to_be_bytes());
    out[33..].copy_from_slice(&p.y.to_be_bytes());
    out
}

/// `k·G` in Jacobian coordinates (never the identity for `k ∈ [1, n-1]`);
/// see [`super::public_key_uncompressed`] for the exceptional cases.
pub(super) fn base_mul(secret: &SecretScalar) -> Jacobian {
    let mut digits = radix16(&secret.0);
    let table = base_table();
    let mut acc = Jacobian {
        x: Fe::ONE,
        y: Fe::ONE,
        z: Fe::ZERO,
    };
    for (i, row) in table.iter().enumerate() {
        acc = add_digit(&acc, row, digits[i], i == 64);
    }
    digits.zeroize();
    acc
}
