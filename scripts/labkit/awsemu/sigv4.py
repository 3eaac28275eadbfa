"""AWS Signature Version 4: verify a request the way the AWS front ends do (hmac/hashlib only).

    auth = verify(method, raw_path, raw_query, headers, body, credentials, now=time.time())
    -> Auth(access_key, region, service, date, signed_headers, token, presigned)
    raises AuthError(code, status, message, detail) when the request must be refused.

headers: a list of (name, value) pairs as received. credentials: {access_key: {"secret": S,
"token": T or None}}. A key with a token (temporary credentials) must come with that token in
X-Amz-Security-Token (header or, when presigned, query); a long-term key must come without one.
"""

import calendar
import email.utils
import hashlib
import hmac
import posixpath
import re
import time
import urllib.parse

ALGORITHM = "AWS4-HMAC-SHA256"
MAX_SKEW = 15 * 60
UNSIGNED = "UNSIGNED-PAYLOAD"

_AUTH_RE = re.compile(r"^AWS4-HMAC-SHA256\s+(.*)$", re.S)


class AuthError(Exception):
    def __init__(self, code, status, message, detail=None):
        super().__init__(message)
        self.code, self.status, self.message, self.detail = code, status, message, detail


class Auth:
    def __init__(self, **kw):
        self.__dict__.update(kw)

    def as_dict(self):
        return dict(self.__dict__)


def sha256_hex(data):
    return hashlib.sha256(data).hexdigest()


def _hmac(key, msg):
    return hmac.new(key, msg.encode("utf-8"), hashlib.sha256).digest()


def signing_key(secret, date, region, service):
    k = _hmac(("AWS4" + secret).encode("utf-8"), date)
    k = _hmac(k, region)
    k = _hmac(k, service)
    return _hmac(k, "aws4_request")


def _quote(s):
    return urllib.parse.quote(s, safe="-_.~")


def canonical_uri(raw_path):
    """Non-S3 services: normalised path, each segment URI-encoded again (it arrives encoded once)."""
    path = raw_path or "/"
    norm = posixpath.normpath(path) if path not in ("/", "") else "/"
    if path.endswith("/") and norm != "/":
        norm += "/"
    if norm.startswith("//"):
        norm = "/" + norm.lstrip("/")
    return urllib.parse.quote(norm, safe="/~")


def canonical_query_candidates(raw_query, drop=("X-Amz-Signature",)):
    """The canonical query string: decoded then re-encoded and sorted (the spec), and the raw
    pairs sorted as they came (what botocore does when the URL already carries them)."""
    pairs = []
    for part in raw_query.split("&") if raw_query else []:
        if not part:
            continue
        k, _, v = part.partition("=")
        pairs.append((k, v))
    out = []
    enc = sorted((_quote(urllib.parse.unquote(k)), _quote(urllib.parse.unquote(v)))
                 for k, v in pairs if urllib.parse.unquote(k) not in drop)
    out.append("&".join("%s=%s" % kv for kv in enc))
    raw = sorted((k, v) for k, v in pairs if urllib.parse.unquote(k) not in drop)
    raw_s = "&".join("%s=%s" % kv for kv in raw)
    if raw_s not in out:
        out.append(raw_s)
    return out


def canonical_headers(headers, signed):
    by = {}
    for name, value in headers:
        by.setdefault(name.lower().strip(), []).append(" ".join(str(value).split()))
    lines = []
    for h in signed:
        if h not in by:
            raise AuthError("SignatureDoesNotMatch", 403,
                            "Signed header %r is not in the request." % h)
        lines.append("%s:%s\n" % (h, ",".join(by[h])))
    return "".join(lines)


def canonical_request(method, raw_path, cquery, headers, signed, payload_hash):
    return "\n".join([method.upper(), canonical_uri(raw_path), cquery,
                      canonical_headers(headers, signed), ";".join(signed), payload_hash])


def string_to_sign(amz_date, scope, creq):
    return "\n".join([ALGORITHM, amz_date, scope, sha256_hex(creq.encode("utf-8"))])


def parse_amz_date(s):
    try:
        return calendar.timegm(time.strptime(s, "%Y%m%dT%H%M%SZ"))
    except (TypeError, ValueError):
        return None


def _header(headers, name):
    name = name.lower()
    vals = [v for k, v in headers if k.lower() == name]
    return ",".join(vals) if vals else None


def parse_authorization(value):
    """{'credential': 'AKID/DATE/REGION/SERVICE/aws4_request', 'signedheaders': [...], 'signature': hex}"""
    m = _AUTH_RE.match(value.strip())
    if not m:
        raise AuthError("IncompleteSignature", 400,
                        "Authorization header requires the %s algorithm." % ALGORITHM)
    fields = {}
    for part in re.split(r"\s*,\s*", m.group(1).strip()):
        k, sep, v = part.partition("=")
        if not sep:
            raise AuthError("IncompleteSignature", 400,
                            "Authorization header requires 'Credential', 'SignedHeaders' and "
                            "'Signature' parameters (got %r)." % part)
        fields[k.strip().lower()] = v.strip()
    for need in ("credential", "signedheaders", "signature"):
        if not fields.get(need):
            raise AuthError("IncompleteSignature", 400,
                            "Authorization header requires '%s' parameter." % need.capitalize())
    return fields


def credential_scope(value):
    """Credential value -> (access_key, date, region, service); AuthError if malformed."""
    parts = value.split("/")
    if len(parts) != 5 or parts[4] != "aws4_request" or not all(parts):
        raise AuthError("IncompleteSignature", 400,
                        "Credential should be scoped to a valid region, service and "
                        "'aws4_request' terminator: %r." % value)
    return parts[0], parts[1], parts[2], parts[3]


def scope_of(headers, raw_query):
    """(access_key, date, region, service) from Authorization or a presigned query; None if neither."""
    auth = _header(headers, "authorization")
    try:
        if auth:
            return credential_scope(parse_authorization(auth)["credential"])
        q = dict(urllib.parse.parse_qsl(raw_query or "", keep_blank_values=True))
        if "X-Amz-Credential" in q:
            return credential_scope(q["X-Amz-Credential"])
    except AuthError:
        return None
    return None


def verify(method, raw_path, raw_query, headers, body, credentials, now=None, max_skew=MAX_SKEW):
    now = time.time() if now is None else now
    auth_value = _header(headers, "authorization")
    q = dict(urllib.parse.parse_qsl(raw_query or "", keep_blank_values=True))
    presigned = False
    if auth_value:
        f = parse_authorization(auth_value)
        credential, signed_s, signature = f["credential"], f["signedheaders"], f["signature"]
        amz_date = _header(headers, "x-amz-date")
        if amz_date is None:
            d = _header(headers, "date")
            t = email.utils.parsedate_tz(d) if d else None
            if t is None:
                raise AuthError("IncompleteSignature", 400,
                                "Authorization header requires existence of either a 'X-Amz-Date' "
                                "or a 'Date' header.")
            amz_date = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(email.utils.mktime_tz(t)))
        token = _header(headers, "x-amz-security-token")
        payload_hash = _header(headers, "x-amz-content-sha256") or sha256_hex(body)
        hashes = [payload_hash]
    elif q.get("X-Amz-Algorithm") or q.get("X-Amz-Signature"):
        presigned = True
        if q.get("X-Amz-Algorithm") != ALGORITHM:
            raise AuthError("IncompleteSignature", 400, "X-Amz-Algorithm must be %s." % ALGORITHM)
        missing = [k for k in ("X-Amz-Credential", "X-Amz-Date", "X-Amz-SignedHeaders",
                               "X-Amz-Signature") if not q.get(k)]
        if missing:
            raise AuthError("IncompleteSignature", 400,
                            "Query-string authentication requires %s." % ", ".join(missing))
        credential, signed_s, signature = (q["X-Amz-Credential"], q["X-Amz-SignedHeaders"],
                                           q["X-Amz-Signature"])
        amz_date = q["X-Amz-Date"]
        token = q.get("X-Amz-Security-Token") or _header(headers, "x-amz-security-token")
        hashes = [UNSIGNED, sha256_hex(body)]
    else:
        raise AuthError("MissingAuthenticationToken", 403, "Request is missing Authentication Token")

    akid, sdate, region, service = credential_scope(credential)
    signed = [h.strip().lower() for h in signed_s.split(";") if h.strip()]
    if "host" not in signed:
        raise AuthError("SignatureDoesNotMatch", 403, "'Host' must be a signed header.")
    if signed != sorted(signed):
        raise AuthError("SignatureDoesNotMatch", 403, "SignedHeaders must be sorted: %s." % signed_s)

    cred = credentials.get(akid)
    if cred is None:
        raise AuthError("InvalidClientTokenId", 403,
                        "The security token included in the request is invalid.")
    want_token = cred.get("token")
    if want_token and token != want_token:
        raise AuthError("InvalidClientTokenId", 403,
                        "The security token included in the request is invalid." if token else
                        "The security token is missing for temporary credentials %s." % akid)
    if not want_token and token:
        raise AuthError("InvalidClientTokenId", 403,
                        "The security token included in the request is invalid.")

    t = parse_amz_date(amz_date)
    if t is None:
        raise AuthError("IncompleteSignature", 400, "Invalid X-Amz-Date %r." % amz_date)
    if amz_date[:8] != sdate:
        raise AuthError("SignatureDoesNotMatch", 403,
                        "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of "
                        "date from HTTP: '%s' != '%s', from '%s'." % (sdate, amz_date[:8], amz_date))
    if presigned:
        try:
            expires = int(q.get("X-Amz-Expires", "900"))
        except ValueError:
            raise AuthError("AuthorizationQueryParametersError", 400, "X-Amz-Expires must be a number.")
        if now > t + expires:
            raise AuthError("RequestExpired", 400, "Request has expired (X-Amz-Date %s + %ss)."
                            % (amz_date, expires))
    if abs(now - t) > max_skew:
        now_s = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
        raise AuthError("RequestExpired", 400,
                        "Request has expired: X-Amz-Date %s is more than %d minutes from the "
                        "server time %s." % (amz_date, max_skew // 60, now_s))

    scope = "/".join([sdate, region, service, "aws4_request"])
    key = signing_key(cred["secret"], sdate, region, service)
    tried = []
    for cq in canonical_query_candidates(raw_query or ""):
        for ph in hashes:
            creq = canonical_request(method, raw_path, cq, headers, signed, ph)
            sts = string_to_sign(amz_date, scope, creq)
            calc = hmac.new(key, sts.encode("utf-8"), hashlib.sha256).hexdigest()
            if hmac.compare_digest(calc, signature.lower()):
                return Auth(access_key=akid, region=region, service=service, date=amz_date,
                            signed_headers=signed, token=token, presigned=presigned)
            tried.append({"canonical_request": creq, "string_to_sign": sts})
    raise AuthError("SignatureDoesNotMatch", 403,
                    "The request signature we calculated does not match the signature you "
                    "provided. Check your AWS Secret Access Key and signing method. Consult the "
                    "service documentation for details.", detail=tried[0] if tried else None)
