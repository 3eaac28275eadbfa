"""Wire formats: the Query protocol's XML (RDS, ElastiCache) and JSON 1.1 (MemoryDB), with errors.

Structures are dicts (insertion order kept), lists are XList(member_name, items); None values and
empty optional lists are left out, as AWS does.
"""

import json
import time
import uuid
from xml.sax.saxutils import escape

RDS_NS = "http://rds.amazonaws.com/doc/2014-10-31/"
EC_NS = "http://elasticache.amazonaws.com/doc/2015-02-02/"
RDS_VERSION = "2014-10-31"
EC_VERSION = "2015-02-02"
JSON_CT = "application/x-amz-json-1.1"
XML_CT = "text/xml"


class ApiError(Exception):
    """An AWS error reply: code, HTTP status, message; sender=False for a server fault."""

    def __init__(self, code, status, message, sender=True):
        super().__init__("%s: %s" % (code, message))
        self.code, self.status, self.message, self.sender = code, status, message, sender


class XList:
    def __init__(self, member, items):
        self.member, self.items = member, list(items)


def request_id():
    return str(uuid.uuid4())


def iso(t):
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + ".%03dZ" % int((t % 1) * 1000)


def _text(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return repr(v)
    return escape(str(v))


def xml_element(name, value):
    if value is None:
        return ""
    if isinstance(value, XList):
        return "<%s>%s</%s>" % (name, "".join(xml_element(value.member, i) for i in value.items), name)
    if isinstance(value, dict):
        return "<%s>%s</%s>" % (name, "".join(xml_element(k, v) for k, v in value.items()), name)
    return "<%s>%s</%s>" % (name, _text(value), name)


def xml_response(action, ns, result, rid):
    """<ActionResponse xmlns=ns><ActionResult>...</ActionResult><ResponseMetadata>..."""
    inner = "".join(xml_element(k, v) for k, v in result.items()) if result else ""
    body = ('<?xml version="1.0" encoding="UTF-8"?>\n<%sResponse xmlns="%s">\n  <%sResult>%s</%sResult>\n'
            '  <ResponseMetadata>\n    <RequestId>%s</RequestId>\n  </ResponseMetadata>\n</%sResponse>\n'
            % (action, ns, action, inner, action, rid, action))
    return body.encode("utf-8")


def xml_error(ns, err, rid):
    body = ('<?xml version="1.0" encoding="UTF-8"?>\n<ErrorResponse xmlns="%s">\n  <Error>\n'
            '    <Type>%s</Type>\n    <Code>%s</Code>\n    <Message>%s</Message>\n  </Error>\n'
            '  <RequestId>%s</RequestId>\n</ErrorResponse>\n'
            % (ns, "Sender" if err.sender else "Receiver", escape(err.code), escape(err.message), rid))
    return body.encode("utf-8")


def _jsonable(v):
    if isinstance(v, XList):
        return [_jsonable(i) for i in v.items]
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items() if x is not None}
    if isinstance(v, list):
        return [_jsonable(i) for i in v]
    return v


def json_response(obj):
    return json.dumps(_jsonable(obj), separators=(",", ":")).encode("utf-8")


def json_error(err, message_key="message"):
    """{"__type": CODE, "message": ...}; Secrets Manager says "Message"."""
    return json.dumps({"__type": err.code, message_key: err.message}).encode("utf-8")


def malformed(protocol, action, ns):
    """A 200 reply whose body does not parse (what a broken proxy or a cut stream leaves)."""
    if protocol == "json":
        return b'{"Clusters": [{"Name": "lab-memorydb", "Status": "avail'
    return ('<?xml version="1.0" encoding="UTF-8"?>\n<%sResponse xmlns="%s"><%sResult><Items>'
            '<Item><Status>available</Stat' % (action, ns, action)).encode("utf-8")


# ---- Query protocol parameters ------------------------------------------------------------------
def q_list(params, prefix, member):
    """Prefix.Member.1, Prefix.Member.2, ... -> [values] (also Prefix.member.N)."""
    out = []
    i = 1
    while True:
        for m in (member, "member"):
            k = "%s.%s.%d" % (prefix, m, i)
            if k in params:
                out.append(params[k])
                break
        else:
            return out
        i += 1


def q_filters(params):
    """Filters.Filter.N.Name / Filters.Filter.N.Values.Value.M -> [(name, [values])]."""
    out = []
    i = 1
    while True:
        base = "Filters.Filter.%d" % i
        if base + ".Name" not in params:
            return out
        out.append((params[base + ".Name"], q_list(params, base + ".Values", "Value")))
        i += 1


def q_bool(params, key, default=False):
    v = params.get(key)
    if v is None:
        return default
    if v.lower() in ("true", "1"):
        return True
    if v.lower() in ("false", "0"):
        return False
    raise ApiError("InvalidParameterValue", 400, "Invalid boolean value %r for %s." % (v, key))


def q_int(params, key, lo=None, hi=None, default=None):
    v = params.get(key)
    if v is None:
        return default
    try:
        n = int(v)
    except ValueError:
        raise ApiError("InvalidParameterValue", 400, "Invalid value %r for %s: not an integer." % (v, key))
    if (lo is not None and n < lo) or (hi is not None and n > hi):
        raise ApiError("InvalidParameterValue", 400,
                       "Invalid value %d for %s. Must be between %s and %s." % (n, key, lo, hi))
    return n
