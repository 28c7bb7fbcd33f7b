"""Pseudonymisation: names, email addresses and phone numbers as salted hashes.

The same value and salt always give the same hash, so joins and counts across runs still
work, while the tables no longer hold who the customers are. Free text (message bodies,
subjects, transcripts) has its email addresses and phone numbers replaced; a name typed
inside a message cannot be recognised and stays (see the README's limitations).
"""

import hashlib
import hmac
import re

HASH_PREFIX = "h:"
HASH_CHARS = 24

EMAIL = re.compile(r"[\w.+'-]+@[\w-]+(?:\.[\w-]+)+")
# E.164 (+15550100123) and North American formats ((555) 010-0123, 555.010.0123).
PHONE = re.compile(r"\+\d{8,15}\b|\(?\b\d{3}\)?[\s.-]\d{3}[\s.-]\d{4}\b")


class Pseudonymizer:
    """Replaces personal values with keyed hashes (HMAC-SHA256 with the salt)."""

    def __init__(self, salt: str):
        if not salt or len(salt) < 16:
            raise ValueError(
                "GLADLY_PII_SALT must be set to a secret of at least 16 characters when "
                "personal data is hashed; keep it stable, or joins across runs break"
            )
        self._key = salt.encode("utf-8")

    def value(self, value):
        if value is None or (isinstance(value, float) and value != value):
            return None
        normal = str(value).strip().lower()
        digest = hmac.new(self._key, normal.encode("utf-8"), hashlib.sha256).hexdigest()
        return HASH_PREFIX + digest[:HASH_CHARS]

    def text(self, value):
        """Free text with the email addresses and phone numbers in it hashed."""
        if not isinstance(value, str):
            return value
        value = EMAIL.sub(lambda m: self.value(m.group(0)), value)
        return PHONE.sub(lambda m: self.value(_digits(m.group(0))), value)


def _digits(phone: str) -> str:
    # (555) 010-0123 and 555.010.0123 are one number: hash the digits only.
    return re.sub(r"[^\d+]", "", phone)


# The SQL functions the analytics rebuild calls (tables.setup_statements) when hashing.
VALUE_FUNCTION = "pii_value"
TEXT_FUNCTION = "pii_text"


def register_functions(connection, p: Pseudonymizer) -> None:
    """Gives a DuckDB connection the hashes as SQL functions (NULL stays NULL).

    They run in Python, row by row, as DuckDB streams the rows through: slower than the
    SQL around them, but within the rebuild's memory limit like the rest of it.
    """
    connection.create_function(VALUE_FUNCTION, p.value, ["VARCHAR"], "VARCHAR")
    connection.create_function(TEXT_FUNCTION, p.text, ["VARCHAR"], "VARCHAR")


def hashed_value_sql(expression: str) -> str:
    return f"{VALUE_FUNCTION}({expression})"


def hashed_list_sql(expression: str) -> str:
    return f"list_transform({expression}, lambda v: {VALUE_FUNCTION}(v))"


def hashed_text_sql(expression: str) -> str:
    """Free text with the email addresses and phone numbers in it hashed."""
    return f"{TEXT_FUNCTION}({expression})"
