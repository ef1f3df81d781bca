"""The landing page, in German or English (the subject's form follows in the portal)."""

from __future__ import annotations

from flask import Blueprint, render_template, request

from dsr.web.context import runtime

bp = Blueprint("home", __name__)

TEXTS = {
    "de": {
        "title": "Ihre Datenschutzrechte",
        "intro": "Hier können Sie Auskunft über Ihre Daten verlangen (Art. 15 DSGVO), sie berichtigen, löschen "
                 "oder einschränken lassen, sie übertragen lassen oder widersprechen (Art. 16–21 DSGVO). "
                 "Die Frist für unsere Antwort beginnt mit dem Eingang Ihres Antrags.",
        "controller": "Verantwortlicher",
        "api": "Schnittstelle",
        "api_text": "Anträge können auch maschinell gestellt werden; die Beschreibung der Schnittstelle:",
    },
    "en": {
        "title": "Your data protection rights",
        "intro": "Here you can ask for access to your data (Art. 15 GDPR), have it rectified, erased or restricted, "
                 "receive it in a portable format, or object (Art. 16–21 GDPR). The period for our answer "
                 "starts when your request arrives.",
        "controller": "Controller",
        "api": "API",
        "api_text": "Requests can also be made by machine; the API is described here:",
    },
}


@bp.get("/")
def index() -> str:
    lang = request.args.get("lang") or request.accept_languages.best_match(["de", "en"]) or "de"
    lang = lang if lang in TEXTS else "de"
    return render_template("index.html", lang=lang, t=TEXTS[lang], controller=runtime().datamap.controller)
