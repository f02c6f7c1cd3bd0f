//! Precompressed siblings (`NAME.br`, `NAME.zst`, `NAME.gz`) chosen by
//! `Accept-Encoding` (RFC 9110 §12.5.3).

/// A content coding a precompressed sibling may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    /// Brotli, `NAME.br`.
    Br,
    /// Zstandard, `NAME.zst`.
    Zstd,
    /// Gzip, `NAME.gz`.
    Gzip,
}

impl Coding {
    /// Server preference among equally weighted codings: the smallest first.
    pub const ALL: [Coding; 3] = [Coding::Br, Coding::Zstd, Coding::Gzip];

    /// The `Content-Encoding` token.
    pub fn token(self) -> &'static str {
        match self {
            Coding::Br => "br",
            Coding::Zstd => "zstd",
            Coding::Gzip => "gzip",
        }
    }

    /// The coding's place in [`Coding::ALL`].
    pub fn index(self) -> u8 {
        match self {
            Coding::Br => 0,
            Coding::Zstd => 1,
            Coding::Gzip => 2,
        }
    }

    /// The sibling file's suffix.
    pub fn suffix(self) -> &'static str {
        match self {
            Coding::Br => ".br",
            Coding::Zstd => ".zst",
            Coding::Gzip => ".gz",
        }
    }
}

/// The codings `accept_encoding` allows, best first: by weight, then by
/// [`Coding::ALL`]'s order. `*` stands for every coding not named;
/// `q=0` refuses; malformed elements are skipped.
pub fn acceptable_codings(accept_encoding: &[u8]) -> Vec<Coding> {
    let Ok(text) = std::str::from_utf8(accept_encoding) else {
        return Vec::new();
    };
    // Weight in thousandths per coding; `None` = not named.
    let mut named = [None::<u16>; Coding::ALL.len()];
    let mut star: Option<u16> = None;
    for element in text.split(',') {
        let mut parts = element.split(';');
        let token = parts.next().unwrap_or("").trim_matches([' ', '\t']);
        let mut weight = Some(1000);
        for param in parts {
            let param = param.trim_matches([' ', '\t']);
            if let Some(q) = param
                .strip_prefix("q=")
                .or_else(|| param.strip_prefix("Q="))
            {
                weight = parse_qvalue(q);
            }
        }
        let Some(weight) = weight else { continue };
        let is = |name: &str| token.eq_ignore_ascii_case(name);
        let coding = if is("br") {
            Some(Coding::Br)
        } else if is("zstd") {
            Some(Coding::Zstd)
        } else if is("gzip") || is("x-gzip") {
            Some(Coding::Gzip)
        } else {
            if token == "*" {
                star = Some(weight);
            }
            None
        };
        if let Some(coding) = coding {
            named[usize::from(coding.index())] = Some(weight);
        }
    }
    let mut out: Vec<(u16, usize)> = (0..Coding::ALL.len())
        .filter_map(|i| named[i].or(star).filter(|&w| w > 0).map(|w| (w, i)))
        .collect();
    out.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    out.into_iter().map(|(_, i)| Coding::ALL[i]).collect()
}

/// `qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )` in
/// thousandths.
fn parse_qvalue(q: &str) -> Option<u16> {
    let (int, frac) = q.split_once('.').unwrap_or((q, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut thousandths: u16 = 0;
    for (i, b) in frac.bytes().enumerate() {
        thousandths += u16::from(b - b'0') * [100, 10, 1][i];
    }
    match int {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Coding::*;

    fn ae(v: &str) -> Vec<Coding> {
        acceptable_codings(v.as_bytes())
    }

    #[test]
    fn negotiates_by_weight_then_preference() {
        assert_eq!(ae(""), vec![]);
        assert_eq!(ae("identity"), vec![]);
        assert_eq!(ae("gzip"), vec![Gzip]);
        assert_eq!(ae("x-gzip"), vec![Gzip]);
        assert_eq!(ae("gzip, deflate, br, zstd"), vec![Br, Zstd, Gzip]);
        assert_eq!(ae("GZIP;q=1.0, br;q=0.5"), vec![Gzip, Br]);
        assert_eq!(ae("br;q=0, gzip"), vec![Gzip]);
        assert_eq!(ae("*"), vec![Br, Zstd, Gzip]);
        assert_eq!(ae("*;q=0.1, gzip;q=0.5, br;q=0"), vec![Gzip, Zstd]);
        assert_eq!(ae("gzip;q=0.001"), vec![Gzip]);
        assert_eq!(ae("gzip;q=0.000"), vec![]);
        // Malformed weights drop their element only.
        assert_eq!(ae("gzip;q=2, br;q=0.5"), vec![Br]);
        assert_eq!(ae("gzip;q=0.1234, zstd ; q=0.9"), vec![Zstd]);
        assert_eq!(ae("gzip;q=, br"), vec![Br]);
        assert_eq!(acceptable_codings(b"\xff"), vec![]);
    }
}
