"""The ``date`` header: RFC 9110's IMF-fixdate, formatted by us exactly as
``email.utils.formatdate(usegmt=True)`` formats it."""
from __future__ import annotations

import time
from email.utils import formatdate

from pyproxy.dataplane.http import imf_fixdate
from pyproxy.observe import PerSecond

DAY = 86400
# every weekday, month and day of month over eight years (two leap days), each at another
# second of the day; the epoch; the last second of 1999 and of signed 32-bit time
MOMENTS = [*range(946_684_800, 946_684_800 + 8 * 365 * DAY, DAY + 3607), 0, 946_684_799, 2**31 - 1, 2**31]


def test_imf_fixdate_is_what_email_utils_formats():
    differ = [(s, imf_fixdate(s)) for s in MOMENTS if imf_fixdate(s) != formatdate(s, usegmt=True).encode()]
    assert differ == []


def test_imf_fixdate_of_rfc_9110s_example():
    assert imf_fixdate(784111777) == b"Sun, 06 Nov 1994 08:49:37 GMT"


def test_date_cache_gives_the_current_second():
    before = int(time.time())
    value = PerSecond(imf_fixdate).get()
    after = int(time.time())
    assert value in {imf_fixdate(second) for second in range(before, after + 1)}
