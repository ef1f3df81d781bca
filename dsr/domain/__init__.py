"""The rules of the case: lifecycle, deadlines, planning, audit. No Flask, no RQ in here."""
