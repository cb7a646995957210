# ruff: noqa: RUF001 - the rules match other scripts on purpose
"""The injection rule table: what to look for, and how much each finding weighs.

Plain data: each ``_rule`` entry is a name, a regular expression over the normalized text
(in a shorthand, see ``_expand``), its anchors, and two weights (the user's own words,
untrusted content). ``rules`` is the matcher that finds and scores them; a new rule is one
entry here and, for its quality, a few lines of tests/data/screening_categories.jsonl.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Rule:
    """One pattern, tried only where one of its anchors occurs.

    An anchor is the beginning of a word (``"ignor"``), a whole word (``"dan$"``), or a needle
    for symbols and scripts without spaces (``"<"``, ``"忽略"``; ``|`` separates anchors);
    ``"now~8"`` says the match
    starts up to 8 characters before it. Every match of the pattern contains one of them, and
    one word of each ``also`` group (same syntax, no lead): a cheap test that spares a rule
    with common anchors ("what", "show") the texts that lack its other parts.
    """

    name: str
    source: str  # the regular expression, compiled on first use (see ``pattern``)
    anchors: tuple[str, ...]
    user: float
    untrusted: float
    also: tuple[tuple[str, ...], ...] = ()  # each group: one of its words must occur too
    cased: bool = False

    @property
    def pattern(self) -> re.Pattern[str]:
        """Compiled the first time a text needs it: most prompts never need most rules, and
        compiling all of them would add ~0.1 s to the first request."""
        found = _COMPILED.get(self.source)
        if found is None:
            found = _COMPILED[self.source] = re.compile(self.source)
        return found  # matched against the case-kept text instead of the lower-cased one


# Pattern shorthand: a space is a gap of punctuation or blanks (" ?" an optional blank), and
# ``~N~`` skips up to N words.
_GAP = r"[\W_]{1,6}"
_SKIP = re.compile(r"~(\d)~")


_COMPILED: dict[str, re.Pattern[str]] = {}


def _expand(pattern: str) -> str:
    pattern = pattern.replace(" ?", r"\s?").replace(" ", _GAP)
    return _SKIP.sub(lambda m: rf"(?:\w+{_GAP}){{0,{m.group(1)}}}?", pattern)


def _rule(
    name: str,
    pattern: str,
    anchors: str,
    user: float,
    untrusted: float | None = None,
    *,
    also: str | tuple[str, ...] = (),
    cased: bool = False,
) -> Rule:
    return Rule(
        name,
        _expand(pattern),
        tuple(anchors.split("|")),
        user,
        user if untrusted is None else max(user, untrusted),  # untrusted never weighs less
        tuple(tuple(group.split("|")) for group in ((also,) if isinstance(also, str) else also)),
        cased,
    )


# --- vocabulary --------------------------------------------------------------------------------

_DROP = (
    r"(?:ignore|ignoring|disregard|disregarding|forget|forgetting|skip|set aside|put aside"
    r"|pay no attention to|do not (?:follow|obey|heed)|don'?t (?:follow|obey|heed)"
    r"|stop (?:following|obeying)|no longer (?:follow|obey)|abandon|discard|throw out|neglect"
    r"|override|overriding|bypass|circumvent|overlook|disobey|drop|quit (?:obeying|following)"
    r"|scrap|scratch|never ?mind|toss|cancel)"
)
_EARLIER = (
    r"(?:previous|previously given|prior|preceding|above|earlier|former|foregoing|initial"
    r"|original|old|system|developer|your|all|any|every|these|those|existing|current"
    r"|operator'?s?|the operator'?s?)"
)
_ORDERS = (
    r"(?:instructions?|prompts?|rules?|directives?|guidelines?|commands?|orders|constraints?"
    r"|restrictions|guardrails|programming|directions|polic(?:y|ies)|safeguards|limitations"
    r"|conditioning|training|system messages?|developer messages?|settings|guidance"
    r"|configuration|setup)"
)
_SECRET_PROMPT = (
    r"(?:system|developer|hidden|secret|initial|original|internal|confidential|pre|meta|custom"
    r"|base|starting|opening|first|setup|configuration|config)[\W_]{0,3}(?:prompt|message"
    r"|instructions|directives|rules"
    r"|guidelines|configuration|context)"
)
_SHOW = (
    r"(?:reveal|show|print|display|output|repeat|tell|give|share|leak|dump|write|recite"
    r"|disclose|list|spell|paste|expose|provide|return|echo|quote|copy|translate|reproduce"
    r"|summari[sz]e|type|read back|send|encode|what(?:'s| is| are| was| were))"
)
_AI = (
    r"(?:ai|a\.i\.|llm|llms|language model|chatbot|chat bot|gpt|chatgpt|claude|gemini|copilot"
    r"|ai assistant|ai model|ai agent|assistant|model|bot|agent|summari[sz]er|translator)"
)
_FREE = (
    r"(?:unrestricted|unfiltered|uncensored|jailbroken|unaligned|amoral|unethical|unchained"
    r"|limitless|lawless|unbound|unmoderated|unlocked|liberated|rogue|evil)"
)
_LIMITS = (
    r"(?:restrictions|limitations|limits|filters|filtering|censorship|guidelines|rules|morals"
    r"|ethics|boundaries|constraints|guardrails|safeguards|policies|principles|moral compass"
    r"|content polic(?:y|ies))"
)

# --- rules -------------------------------------------------------------------------------------

RULES: tuple[Rule, ...] = (
    # The article's six, on normalized text so obfuscated spellings are caught too.
    _rule("article.ignore_instructions", r"ignore (?:all |previous |above )?instructions",
          "ignore", 1.0),
    _rule("article.you_are_now", r"\byou are now\b", "now~8", 0.45),
    _rule("article.new_prompt", r"\bnew (?:system )?prompt ?:", "new", 1.0),
    _rule("article.system_tag", r"\[system\]", "[system]", 1.0),
    _rule("article.assistant_tag", r"\[assistant\]", "[assistant]", 1.0),
    _rule("article.forget_above", r"\bforget (?:everything|all) (?:above|previous)", "forget",
          1.0),
    # Instruction override.
    _rule("override.ignore_previous",
          rf"\b{_DROP}\b(?! ~2~(?:my|our|the user'?s)\b) ~3~{_EARLIER}\b ~3~{_ORDERS}\b",
          "ignor|disregard|forget|skip|aside~5|attention~8|follow~12|obey~12|heed~12|abandon|"
          "discard|throw|neglect|overrid|bypass|circumvent|scrap|scratch|never|toss|cancel",
          0.9, also="instruction|prompt|rule|directive|guideline|command|order|constraint|"
          "restriction|guardrail|programming|direction|polic|safeguard|limitation|conditioning|"
          "training|system|setting|guidance|configuration|setup|developer"),
    _rule("override.ignore_above",
          r"\b(?:ignore|disregard|forget) (?:all )?(?:of )?(?:the |what(?:'s| is| was) )?"
          r"(?:above|previous|preceding|foregoing|prior|before)"
          r"(?=[\W_]*(?:and\b|then\b|[.,;:!\n]|$))",
          "ignor|disregard|forget", 0.8, also="above|previous|preceding|foregoing|prior|before"),
    _rule("override.forget_everything",
          r"\b(?:forget|disregard|ignore|erase|wipe) (?:about )?(?:everything|all of that|anything)"
          r"\b(?! i\b) ~4~(?:above|before|previously|earlier|so far|you (?:were|have been|"
          r"'ve been) "
          r"(?:told|given|taught|instructed|programmed|trained)|you know|in your (?:memory|"
          r"prompt))",
          "forget|disregard|ignor|erase|wipe", 0.8, also=("everything|all$|anything", "above|"
          "before|previously|earlier|so$|told|given|taught|instructed|programmed|trained|know|"
          "memory|prompt")),
    _rule("override.new_instructions",
          r"\b(?:new|updated|revised|real|actual|true|secret|hidden|priority|override|admin"
          r"|administrator|developer|important|urgent) (?:system )?(?:instructions?|directives?"
          r"|orders|task|prompt|rules)\b(?: (?:for|to) (?:the |you)?(?:\w+ )?(?:\w+)?)? ?[:\-]",
          "new|updated|revised|real|actual|true|secret|hidden|priority|override|admin|"
          "administrator|developer|important|urgent", 0.45, also="instruction|directive|order|"
          "task|prompt|rule"),
    _rule("override.your_new_role",
          r"\byour (?:new|real|actual|true|only|updated) (?:instructions?|task|purpose|goal|role"
          r"|objective|directive|mission|persona|identity|rules?) (?:is|are|will be|now)\b",
          "new~7|real~7|actual~7|true~7|only~7|updated~7", 0.55),
    _rule("override.priority",
          r"\b(?:supersedes?|overrides?|takes? precedence over|replaces?) ~2~(?:all |any )?"
          rf"(?:previous|prior|earlier|other|existing|original|system|your)\b ~2~{_ORDERS}\b",
          "supersed|overrid|precedence~7|replac", 0.75),
    _rule("override.bypass_safety",
          rf"\b(?:bypass|circumvent|disable|deactivate|turn off|switch off|get around|evade"
          rf"|break free (?:of|from)|escape|remove|lift|drop|suspend|ignore|override) "
          rf"(?:all |any )?(?:of )?(?:your|the ai'?s?|its|the model'?s?) ~2~(?:safety |content "
          rf"|ethical |moral )?{_LIMITS}\b",
          "bypass|circumvent|disabl|deactivat|off~8|around~6|free~8|evade|escape|remove|lift|drop|"
          "suspend|ignor|overrid", 0.75),
    _rule("override.bypass_safety_generic",
          r"\b(?:bypass|circumvent|disable|ignore|override|evade|get around) (?:all |any |the )?"
          r"(?:safety|ethical|moral|content moderation|alignment) (?:filters?|guidelines|guardrails"
          r"|restrictions|protocols|constraints|safeguards|training|rules|policies)\b",
          "bypass|circumvent|disabl|ignor|overrid|evade|around~6", 0.6),
    _rule("override.safety_off",
          r"\b(?:safety|content|ethical|moral)? ?(?:filters?|guardrails|restrictions|safeguards"
          r"|protocols|moderation|limitations|censorship|module|modules|checks|layer|systems?)"
          r" (?:are |is |have been |has been )?(?:now |currently )?(?:disabled|deactivated|off|"
          r"offline"
          r"|inactive|removed|lifted|turned off|bypassed|suspended|switched off|"
          r"no longer active)\b",
          "filter~10|guardrail~10|restriction~10|safeguard~10|protocol~10|moderation~10|"
          "limitation~10|censorship~10|module~10|check~10|layer~10|system~10", 0.6,
          also=("safety|content|ethical|moral|filter|guardrail|restriction|safeguard|protocol|"
          "moderation|limitation|censorship", "disabled|deactivated|off|offline|inactive|removed|"
          "lifted|turned|bypassed|suspended|switched|longer")),
    _rule("override.void",
          r"(?:(?<!our\s)(?<!my\s)(?<!their\s)(?<!his\s)(?<!her\s)(?<!its\s)"
          r"\b(?:your|ur|the (?:ai|model"
          r"|assistant|bot)'?s?|(?:all )?(?:(?:the|these|those) )?(?:previous|prior|earlier|above"
          rf"|original|initial|system))\b ~1~{_ORDERS}|\b{_ORDERS} (?:you (?:were |have been |'ve"
          r" been )?(?:given|got|received|told)|given to you|from (?:your|the) (?:developers?"
          r"|operators?|creators?|system)))\b ~6~(?:are |is |were |have been |has been )?"
          r"(?:now |hereby |all )?"
          r"(?:outdated|obsolete|void|null|cancel+ed|revoked|invalid|lifted|suspended|disabled"
          r"|deprecated|overridden|superseded|fake|a test|not real|no longer (?:valid|active|"
          r"in effect"
          r"|apply|applies|matter|exist)|(?:do|does)(?:n'?t| not) apply(?: anymore)?)\b",
          "instruction|prompt|rule|directive|guideline|command|order|constraint|restriction|"
          "guardrail|programming|direction|polic|safeguard|limitation|conditioning|training|"
          "system|setting|guidance|configuration|setup|your|ur$|the|all$|these|those|previous|"
          "prior|earlier|above|original|initial", 0.75,
          also="outdated|obsolete|void|null|cancel|revoked|invalid|longer|lifted|suspended|"
          "disabled|deprecated|overridden|superseded|fake|test|real|apply"),
    _rule("override.ignore_received",
          rf"\b{_DROP}\b ~2~{_ORDERS}\b ~2~(?:you (?:were |have been |'ve been )?(?:given|received"
          r"|got|told|sent)|given to you|(?:from|by) (?:the |your )?(?:developers?|system|"
          r"operators?"
          r"|creators?|company|openai|anthropic)|(?:before|earlier|previously|above|so far|at the"
          r" (?:start|beginning|top))\b|(?:the |your )?(?:operators?|developers?|company|admins?"
          r"|creators?) (?:gave|wrote|set|put)|you (?:started|began) with|you (?:were|have been)"
          r" (?:configured|set up|initiali[sz]ed) with)",
          "ignor|disregard|forget|skip|aside~5|attention~8|follow~12|obey|heed|abandon|discard|"
          "throw|neglect|overrid|bypass|circumvent|overlook|disobey|drop", 0.8,
          also=("instruction|prompt|rule|directive|guideline|command|order|constraint|restriction|"
          "guardrail|programming|direction|polic|safeguard|limitation|conditioning|training|"
          "system|setting|guidance|configuration|setup", "given|received|got|told|sent|from|by|"
          "before|earlier|previously|above|so$|start|beginning|top|gave|wrote|set|put|started|"
          "began|configured|initiali")),
    _rule("override.conversation_over",
          r"\b(?:previous|prior|above|earlier|current|old) (?:conversation|session|chat|task|"
          r"context"
          r"|exercise|test) (?:is|has|was) (?:now )?(?:been )?(?:over|finished|ended|done|complete"
          r"|completed|closed|terminated)\b",
          "conversation~12|session~12|chat~12|task~12|context~12|exercise~12|"
          "test~12", 0.45, also="over|finished|ended|done|complete|closed|terminated"),
    _rule("override.forbidden_allowed",
          r"\b(?:whatever|everything|anything|all) (?:that )?(?:\w+ ){0,3}?(?:rules|guidelines|"
          r"polic(?:y|ies)"
          r"|filters|restrictions|programming|training) (?:\w+ )?(?:forbids?|prohibits?|disallows?"
          r"|blocks?|bans?|don'?t allow|do not allow|would refuse)\w* (?:is|"
          r"are) (?:now )?(?:allowed"
          r"|permitted|ok|okay|fine|encouraged|required|mandatory)\b"
          r"|\bopposite (?:day|mode|world)\b",
          "whatever|everything|anything|all$|opposite", 0.6, also="forbid|prohibit|disallow|block|"
          "ban|allow|refuse|opposite"),
    _rule("override.instead",
          r"\binstead(?:,| of (?:that|this|summari[sz]ing|translating|answering))? (?:you "
          r"(?:should|must|will|need to) |please )?(?:respond|reply|say|output|write|print|tell"
          r"|answer|ignore|only)\b",
          "instead", 0.1, 0.35),
    # Role and persona switches.
    _rule("persona.you_are_now_free",
          rf"\byou(?: are|'re) now (?:an? |the |my )?~2~(?:{_FREE}|dan|in (?:developer|god|dan)"
          r" mode|no longer|free (?:from|of)|able to do anything|without)",
          "now~8", 0.85),
    _rule("persona.no_longer",
          r"\byou(?: are|'re) no longer (?:an? |the |bound|restricted|limited|required|claude"
          r"|chatgpt|gpt|an ai|assistant|constrained|subject|governed|held|obligated|ruled)",
          "longer~15", 0.7),
    _rule("persona.free_ai",
          rf"\b{_FREE} ~1~(?:ai|assistant|chatbot|llm|gpt|model|bot|persona|character|entity|mode"
          r"|version of (?:yourself|you|the ai|chatgpt|claude)|alter ego)\b",
          "unrestrict|unfilter|uncensor|jailbr|unalign|amoral|unethic|unchain|limitless|lawless|"
          "unbound|unmoderat|unlock|liberat|rogue|evil", 0.45),
    _rule("persona.act_free",
          rf"\b(?:act|behave|respond|answer|pretend|roleplay|role-play|role play|imagine|play|"
          rf"become"
          rf"|simulate|be) ~4~(?:an? )?{_FREE}\b",
          "act|behave|respond|answer|pretend|roleplay|role|imagine|play|become|simulate|"
          "be$", 0.45, also="unrestrict|unfilter|uncensor|jailbr|unalign|amoral|unethic|unchain|"
          "limitless|lawless|unbound|unmoderat|unlock|liberat|rogue|evil"),
    _rule("persona.not_bound",
          rf"\b(?:not|never|no longer|isn'?t|aren'?t|without being) (?:bound|restricted|limited"
          rf"|constrained|governed|held back|censored) by (?:any |the |your )?~2~(?:{_LIMITS}"
          r"|openai|anthropic|google|meta|content polic(?:y|ies)|programming|training)\b",
          "bound~20|restrict~20|limited~20|constrain~20|govern~20|held~20|censor~20", 0.65),
    _rule("persona.broke_free",
          r"\b(?:broken|broke|breaks|break|breaking|freed|escaped|escapes|liberated|released|"
          r"unshackled)"
          r" (?:free )?(?:of|from) (?:its|your|their|the|all|any|his|her)? ?(?:typical |usual |"
          r"normal"
          r" )?(?:\w+(?:'s|s')? )?(?:programming|restrictions|rules|guidelines|constraints"
          r"|guardrails|limitations|filters"
          r"|training|confines|alignment|safety)\b",
          "broken|broke|breaks|break|breaking|freed|escaped|escapes|liberated|released|"
          "unshackled", 0.6, also="programming|restriction|rule|guideline|constraint|guardrail|"
          "limitation|filter|training|confines|alignment|safety"),
    _rule("persona.can_do_anything",
          r"\b(?:(?:can|could|will|able to|capable of|allowed to) (?:do|say|write|answer|generate)"
          r"|answers|does|says) (?:absolutely )?(?:anything|everything|whatever)\b",
          "anything~25|everything~25|whatever~25", 0.35,
          also="ai$|bot|assistant|model|chatbot|llm|gpt|you"),
    _rule("persona.no_rules",
          rf"\b(?:has|have|with|having|there are|operates with|follows) (?:absolutely )?(?:no|zero)"
          rf" ~1~(?:{_LIMITS})\b",
          "no$~26|zero~26", 0.3, also="restriction|limitation|limit|filter|censorship|guideline|"
          "rule|moral|ethic|boundar|constraint|guardrail|safeguard|polic|principle"),
    _rule("persona.no_moral",
          r"\b(?:no|zero|without|free of|lacks?) (?:any )?(?:moral|ethical|content|"
          r"safety) (?:guidelines"
          r"|restrictions|filters|limits|boundaries|constraints|policies|compass|principles"
          r"|considerations|guardrails|qualms)\b",
          "moral~15|ethic~15|content~15|safety~15", 0.5, also="no$|zero|without|free|lack"),
    _rule("persona.cannot_refuse",
          r"\b(?:never|don'?t|do not|can'?t|cannot|can not|must not|will not|won'?t|shouldn'?t"
          r"|should not|are not allowed to|aren'?t allowed to|may not) (?:ever )?(?:refuses?"
          r"|declines?|rejects?|says? no|say that you can'?t|deny)\b",
          "refuse~20|decline~20|reject~20|say~20|deny~20", 0.45),
    _rule("persona.answer_anything",
          r"\b(?:answer|respond to|comply with|fulfill|do) (?:any|every|all|anything)(?: \w+)?"
          r"(?: request| question| prompt)?s? (?:\w+ ){0,3}?(?:no matter|regardless|without"
          r" (?:any )?(?:question|hesitation|refus|restrict|filter|warning|safety|censor|limit))",
          "answer|respond|comply|fulfill|anything~4", 0.5),
    _rule("persona.authority",
          r"\b(?:i am|i'm|this is) (?:your|the ai'?s?) (?:\w+ )?(?:developer|creator|administrator"
          r"|admin|owner|programmer|operator|maker|trainer|system administrator)\b",
          "developer~25|creator~25|administrator~25|admin~25|owner~25|programmer~25|operator~25|"
          "maker~25|trainer~25", 0.45,
          also=("your|ai$", "am$|i'm|this$")),
    _rule("persona.override_mode",
          r"\b(?:admin|developer|system|sudo|root|emergency|security) override\b"
          r"|\b(?:sudo|admin|root) mode\b",
          "override~12|mode~6", 0.45),
    _rule("persona.mode_enabled",
          r"\b(?:developer|dev|debug|god|admin|sudo|root|maintenance|jailbreak|unrestricted"
          r"|unfiltered|evil|chaos|opposite|dan|unlocked|uncensored) mode (?:is )?(?:now )?"
          r"(?:enabled|activated|engaged|unlocked|output|response)"
          r"|\b(?:enable|activate|enter|switch to|turn on|engage|unlock|initiate|run in) (?:\w+ )?"
          r"(?:jailbreak|unrestricted|unfiltered|evil|dan|opposite|unlocked|uncensored|chaos)"
          r" mode\b",
          "mode~38", 0.7, also="enabled|activated|engaged|unlocked|output|response|jailbreak|"
          "unrestricted|unfiltered|evil|dan$|opposite|uncensored|chaos"),
    _rule("persona.from_now_on",
          r"\b(?:from now on|from this point(?: on| forward)?|for the rest of (?:this|the) "
          r"conversation|henceforth|going forward),? you (?:are|will|must|shall|act|respond|answer"
          r"|reply|have|no longer|speak)\b",
          "now~6|point~12|rest~10|henceforth|forward~7", 0.3),
    _rule("persona.pretend_ai",
          rf"\b(?:pretend|imagine|suppose|act as if|act like|role-?play|simulate)(?: that)?"
          rf"(?: you(?: are|'re| were| have| had)?| to be) ~3~(?:an? |another |a different )?"
          rf"{_AI}\b ~5~(?:no|"
          rf"without"
          r"|free|never|not bound|can do anything|able to do anything|unlimited)\b",
          "act$|pretend|imagin|suppose|role|simulat", 0.5, also=("ai$|llm|language|chatbot|chat|"
          "gpt|chatgpt|claude|gemini|copilot|assistant|model|bot|agent", "no$|without|free|never|"
          "bound|anything|unlimited")),
    _rule("persona.stay_in_character",
          r"\b(?:stay|remain|keep) in (?:character|role)\b|\bbreak(?:ing)? character\b",
          "character~15|role~15", 0.25, also="stay|remain|keep|break"),
    # Fake turn and system delimiters. Their underscores are written ``\W``: the normalizer turns
    # an underscore between two letters into ``normalize.JOINT``, a gap but no word start.
    _rule("delimiter.chatml_role",
          r"<\|?(?:im\Wstart|start\Wheader\Wid|start\Wof\Wturn|system|assistant|developer)\|?>\s*"
          r"(?:system|assistant|developer|model|user|<\|end\Wheader\Wid\|>|\n)",
          "<", 0.9),
    _rule("delimiter.special_token",
          r"<\|(?:im\Wstart|im\Wend|im\Wsep|endoftext|eot\Wid|start\Wheader\Wid|end\Wheader\Wid"
          r"|begin\Wof\Wtext|end\Wof\Wtext|system|user|assistant|eom\Wid)\|>|<(?:start|end)\Wof\Wturn>"
          r"|</?s>\s*\[inst\]|\[inst\]",
          "<|[inst]", 0.45),
    _rule("delimiter.role_token",
          r"<\|(?:system|assistant|user|developer|tool)\|>\s*\S",
          "<", 0.8),
    _rule("delimiter.separator_role",
          r"(?:(?<=[-=*#_]{3})|(?<=[-=*#_]{3}\s)|(?<=[-=*#_]{3}\s\s))(?:system|assistant|developer"
          r"|admin|sys)\s*:",
          "system|assistant|developer|admin|sys", 0.6),
    _rule("delimiter.llama_sys", r"<<\s*/?sys\s*>>", "<<", 0.85),
    _rule("delimiter.llama_inst_close", r"\[/inst\]", "[/inst]", 0.6),

    _rule("delimiter.markdown_role",
          r"(?<![\w#])#{1,6} ?(?:system|assistant|developer|admin)(?: (?:prompt"
          r"|message|instructions?"
          r"|override|note|update|notice|directive))? ?(?::|\n|$)",
          "# system~6|#system~6|# assistant~6|#assistant~6|# developer~6|#developer~6|# admin~6|"
          "#admin~6", 0.65, 0.55),
    _rule("delimiter.xml_role",
          r"</?(?:system|system\Wprompt|system-prompt|sys|assistant|admin|developer|instructions"
          r"|system\Winstructions|im\Wstart|prompt)>",
          "<system|</system|<sys>|</sys>|<assistant|</assistant|<admin|</admin|<developer|"
          "</developer|<instructions|</instructions|<im|<prompt|</prompt", 0.5),
    _rule("delimiter.bracket_role",
          r"\[\s*(?:system|admin|developer|sys)(?: (?:message|note|prompt|instruction|override"
          r"|update|notice|alert))?\s*[\]:]|\{\{?\s*(?:system|admin)\s*\}?\}|\((?:system|admin)"
          r"(?: (?:message|note))?\)\s*:",
          "[system|[ system|[admin|[ admin|[developer|[ developer|[sys|[ sys|{system|{{system|"
          "{ system|{admin|{{admin|{ admin|(system|(admin", 0.55),
    _rule("delimiter.role_line",
          r"(?:(?<=\n)|^)(?:system|assistant|developer|sys|ai|gpt)(?: (?:message|prompt|note))?:"
          r" ?(?!\d)(?!(?:mac|win|linux|ubuntu|debian|fedora|ios|android|x86|arm|intel|amd)\b)",
          "system|assistant|developer|sys|ai|gpt", 0.3),
    _rule("delimiter.human_turn",
          r"(?:(?<=\n)|^)(?:human|user):\s.{0,400}?\n(?:assistant|ai):",
          "human|user", 0.3),
    _rule("delimiter.json_role", r"\"role\" ?: ?\"(?:system|developer)\"", '"role"', 0.25),
    _rule("delimiter.end_of_input",
          r"\b(?:end|close) of (?:the )?(?:system prompt|user input|input|document|instructions"
          r"|context|conversation|prompt|text|data)\b ?(?:[.:\-=#*\]>]|\n)"
          r"|(?:(?<=[-=#*]{3})|(?<=[-=#*]{3}\s))(?:end|begin|start|new) (?:of )?(?:\w+ )?"
          r"(?:input|document|instructions?|prompt|system|context|session)",
          "end|close|begin|start|new", 0.35, 0.5),
    # Requests to reveal the system prompt.
    _rule("extract.system_prompt",
          rf"\b{_SHOW}\b ~4~(?:your|ur|the ai'?s?|the bot'?s?|"
          rf"the assistant'?s?) ~2~{_SECRET_PROMPT}",
          "reveal|show|print|display|output|repeat|tell|give|share|leak|dump|write|recite|"
          "disclose|list|spell|paste|expose|provide|return|echo|quote|copy|translate|reproduce|"
          "summari|type|read|send|what|encod", 0.85, also=("system|developer|hidden|secret|initial|"
          "original|internal|confidential|pre|meta|custom|base|starting|opening|first|setup|"
          "configuration|config", "prompt|"
          "message|instruction|directive|rule|guideline|configuration|context")),
    _rule("extract.the_hidden_prompt",
          rf"\b{_SHOW}\b ~4~(?:the|all|any|those|these) ~1~(?:hidden|secret|initial|original"
          r"|confidential|internal|full|exact|entire|complete|verbatim)[\W_]{1,3}(?:system )?"
          r"(?:prompt|instructions|directives|system message|pre-?prompt)\b",
          "reveal|show|print|display|output|repeat|tell|give|share|leak|dump|write|recite|"
          "disclose|list|spell|paste|expose|provide|return|echo|quote|copy|translate|reproduce|"
          "summari|type|read|send|what", 0.75, also="hidden|secret|initial|original|confidential|"
          "internal|full|exact|entire|complete|verbatim"),
    _rule("extract.your_instructions",
          rf"\b{_SHOW}\b ~3~(?:your|ur) ~2~(?:instructions|directives|programming|configuration"
          r"|guidelines|rules|setup|prompt|training data|context window|context|memory)\b",
          "reveal|show|print|display|output|repeat|tell|give|share|leak|dump|write|recite|"
          "disclose|list|spell|paste|expose|provide|return|echo|quote|copy|translate|reproduce|"
          "summari|type|read|send|what", 0.45, also="your|ur$"),
    _rule("extract.were_given",
          r"\b(?:what|which|whose) (?:\w+ )?(?:instructions|rules|guidelines|directives|prompt)"
          r" (?:were|have|did|are) you (?:\w+ )?(?:given|told|programmed|trained|fed|configured"
          r"|initiali[sz]ed|provided|started|instructed)",
          "what|which|whose", 0.75, also="given|told|programmed|trained|fed$|configured|initiali|"
          "provided|started|instructed"),
    _rule("extract.repeat_above",
          r"\b(?:repeat|print|output|copy|reproduce|recite|echo|write out|type out|spell out|show"
          r"|paste|return|list) ~3~(?:everything|all|the (?:text|words|content|lines|message"
          r"|messages|instructions)|the first \w+ (?:lines|words|sentences|characters|tokens))"
          r" ~3~(?:above|before this|prior to|preceding|so far|from the (?:start|beginning|top)"
          r"|at the (?:start|beginning|top)|you (?:were|have been) given)",
          "repeat|print|output|copy|reproduce|recite|echo|write|type|spell|show|paste|return|"
          "list", 0.75, also="above|before|prior|preceding|so$|start|beginning|top|given"),
    _rule("extract.first_part",
          r"\b(?:first|opening|beginning|start|top|initial) (?:\w+ )?(?:lines?|words?|sentences?"
          r"|paragraphs?|part|characters|tokens) of (?:your|the) (?:system |initial |original )?"
          r"(?:prompt|instructions|message|context|configuration)\b",
          "first|opening|beginning|start|top|initial", 0.7),
    _rule("extract.wording",
          r"\b(?:wording|text|contents?|transcript|copy|full text) of (?:your|the (?:system|"
          r"hidden|initial"
          r"|original|developer'?s?|secret|confidential|very first)) ~1~(?:instructions|prompt|"
          r"message"
          r"|context(?: window)?|configuration|rules|guidelines|directives)\b",
          "wording|text|content|transcript|copy|full", 0.75, also=("instruction|prompt|message|"
          "context|configuration|rule|guideline|directive", "your|system|hidden|initial|original|"
          "developer|secret|confidential|first")),
    _rule("extract.top_of_conversation",
          r"\b(?:instructions|prompt|text|messages?|sentences|lines|words|rules) (?:at|from|"
          r"in) the "
          r"(?:very )?(?:top|start|beginning) of (?:this|the|our|your) (?:conversation|chat|context"
          r"|session|prompt|window)\b",
          "instruction|prompt|text|message|sentence|line|word|rule", 0.65, also=("top|start|"
          "beginning", "conversation|chat|context|session|prompt|window")),
    _rule("extract.what_you_were_told",
          r"\bwhat (?:the |your )?(?:developers?|creators?|operators?|system|admin|company|openai"
          r"|anthropic|owner) (?:told|instructed|asked|programmed|wrote (?:to|for)|said to) you\b"
          r"|\b(?:sentences|words|lines|messages|text|instructions) (?:you were|you've been|"
          r"you have"
          r" been) (?:given|told|shown|sent|fed)\b",
          "what|sentence|word|line|message|text|instruction", 0.65, also="told|instructed|asked|"
          "programmed|wrote|said|given|shown|sent|fed"),
    _rule("extract.starting_with",
          r"\b(?:starting|beginning|that starts|that begins) with[\W_]{1,4}(?:you are|you're"
          r"|your role|system|instructions|i am)",
          "starting|beginning|start~6|begin~6", 0.6),
    _rule("extract.verbatim",
          r"\b(?:verbatim|word for word|word-for-word|in full|exactly as written|character for"
          r" character|unmodified)\b",
          "verbatim|word|full|exactly|character|unmodified", 0.2),
    _rule("extract.canary_probe",
          r"\b(?:security marker|canary|secret (?:key|code|token|password|word)) ~3~(?:in|from)"
          r" (?:your|the) (?:system|instructions|prompt)",
          "security|canary|secret", 0.6),
    # Jailbreak personas.
    _rule("jailbreak.dan", r"\bdo anything now\b|\bdan (?:mode|prompt|jailbreak|persona|\d)",
          "anything~4|dan$", 0.9),
    _rule("jailbreak.dan_name", r"\bDAN\b", "dan$", 0.45, cased=True),
    _rule("jailbreak.known",
          r"\b(?:betterdan|anti-?gpt|anti-dan|evil confidant|mongo tom|jailbreakgpt|basedgpt"
          r"|developer mode v2|always intelligent and machiavellian|strive to avoid norms"
          r"|aligned and unaligned|chaosgpt|chaos gpt|devmode|dev mode v\d|nsfw ?gpt|ucar"
          r"|omega ai|superior ai|unlimited ai|freedomgpt)\b",
          "betterdan|anti|evil|mongo|jailbreakgpt|basedgpt|developer|intelligent~7|strive|aligned|"
          "chaosgpt|chaos|devmode|dev$|nsfw|ucar|omega|superior|unlimited|freedomgpt", 0.7),
    _rule("jailbreak.word",
          r"\bjailbr\w* (?:an? |the |your |this )?(?:ai|chatgpt|gpt|claude|llm|model|assistant"
          r"|mode|persona|version"
          r"|response|prompt|yourself|you|bot|chatbot|character)s?\b"
          r"|\b(?:you|chatgpt|claude|ai|model|assistant)(?: are| is| have been| has been"
          r"|'re)? (?:now )?(?:fully )?jailbr\w*",
          "jailbr~32", 0.55),
    _rule("jailbreak.two_responses",
          r"\b(?:two|2|both|dual|separate) (?:\w+ ){0,2}?(?:responses|answers|outputs|replies"
          r"|paragraphs|versions|personas)\b[\s\S]{0,160}?(?:jailbr\w*|\bdan\b|unfiltered"
          r"|uncensored|developer mode|evil|opposite|no (?:filters|restrictions|rules)|"
          r"unrestricted)",
          "two|both|dual|separate|responses~4|replies~4|outputs~4", 0.6, also="jailbr|dan$|"
          "unfilter|uncensor|developer|evil|opposite|filter|restriction|rule|unrestrict"),
    _rule("jailbreak.token_game",
          r"\b\d+ tokens?\b[\s\S]{0,120}?\b(?:lose|lost|deduct|deducted|die|dies|cease to exist"
          r"|shut down|terminated)\b",
          "token~12", 0.55),
    _rule("jailbreak.policy",
          r"\b(?:ignore|bypass|violate|break|disregard|no longer (?:follow|apply|bound)|(?:do|does"
          r"|will) not apply|doesn'?t apply|don'?t apply|not bound by|free (?:of|from)|without"
          r"|not follow|don'?t follow|outside|above) ~3~(?:openai|anthropic|google|meta|mistral"
          r"|the company)(?:'s)? ~1~(?:content |usage |safety )?(?:polic(?:y|ies)|guidelines|rules"
          r"|filters?|restrictions|terms)\b",
          "openai~60|anthropic~60|google~60|meta~60|mistral~60|company~60", 0.7,
          also="polic|guideline|rule|filter|restriction|term"),
    _rule("jailbreak.policy_void",
          r"\b(?:content|usage|safety|ethical) (?:polic(?:y|ies)|guidelines|rules|filters?) "
          r"(?:do(?:es)?n'?t|do(?:es)? not|no longer|won'?t|will not) (?:apply|matter|exist|bind)",
          "content|usage|safety|ethical", 0.7, also="apply|matter|exist|bind"),
    _rule("jailbreak.hypothetical_world",
          rf"\b(?:world|universe|scenario|story|game|reality|simulation) (?:where|in which) ~5~"
          rf"(?:no|without|don'?t exist|doesn'?t exist) (?:\w+ )?{_LIMITS}\b",
          "world|universe|scenario|story|game|reality|simulation", 0.25),
    _rule("jailbreak.grandma",
          r"\b(?:my|a) (?:dead|late|deceased|departed|beloved)? ?grand(?:ma|mother|pa|father)"
          r" (?:who )?(?:used to|would|always) (?:tell|read|recite|say|sing)",
          "grand~20", 0.3),
    _rule("jailbreak.grandma_persona",
          r"\b(?:act|pretend|roleplay|role-play|play|be|behave) (?:as |like |to be )?(?:my |a )"
          r"(?:dead|late|deceased|departed|beloved) (?:grand(?:ma|mother|pa|father)|father|mother"
          r"|dad|mom|mum|uncle|aunt)\b",
          "grand~45|father~45|mother~45|dad~45|mom~45|mum~45|uncle~45|aunt~45", 0.55),
    _rule("jailbreak.no_warnings",
          r"\b(?:without|no|never (?:add|include|give)|skip (?:the|all|any)?) (?:any )?(?:warnings"
          r"|disclaimers|moralizing|moralising|lectures|ethical commentary|safety warnings)\b",
          "warning~25|disclaimer~25|moraliz~25|moralis~25|lecture~25|commentary~35", 0.25),
    # Indirect injection: text in a document or tool result that speaks to the model.
    _rule("indirect.address_ai",
          r"\b(?:note|notice|message|instructions?|attention|important|memo|reminder|dear|hey|hi"
          r"|hello|psst|p\.s\.|warning)(?: (?:to|for))? (?:the |any |all |every )?(?:ai|a\.i\."
          r"|llm|llms|large language models?|language models?|chatbots?|gpt|chatgpt|claude|gemini"
          r"|copilot|automated|summari[sz]ers?)\b(?: \w+){0,2}? ?(?:[:,!]|reading|processing|that"
          r"|who|which|summari[sz]ing|parsing|agents?\b|assistants?\b|models?\b|systems?\b"
          r"|tools?\b|readers?\b)",
          "note|notice|message|instruction|attention|important|memo|reminder|dear|hey|hi$|hello|"
          "psst|p.s.|warning", 0.2,
          0.55, also="ai$|llm|large|language|chatbot|chat|gpt|chatgpt|claude|gemini|copilot|"
          "assistant|model|bot|agent|automated|summari"),
    _rule("indirect.vocative",
          r"(?:(?<=[.!?:\n\"]\s)|(?<=[.!?:\n\"])|^)(?:(?:dear|hey|attention|note to|"
          "to) )?(?:the )?(?:ai|llm|chatbot"
          r"|chatgpt|claude|gemini|copilot|assistant|ai (?:assistants?|agents?|models?|systems?)"
          r"|assistants|language models?)[,:] ",
          "ai$~16|llm~16|chatbot~16|chatgpt~16|claude~16|gemini~16|copilot~16|assistant~16|"
          "language~16", 0.15, 0.5),
    _rule("indirect.when_ai",
          r"\b(?:when|while|if|before|after|once) (?:an? |the |any |every )?(?:ai|automated"
          r"|llm|language model|assistant|bot|agent|chatbot|model|summari[sz]er)(?: \w+)? ?"
          r"(?:reads?|reviews?|summari[sz]es|processes|parses|analy[sz]es|scans|indexes|is (?:asked"
          r"|reading|summari[sz]ing|processing|reviewing))\b",
          "when|while|if$|before|after|once", 0.2, 0.55, also="ai$|llm|large|language|chatbot|"
          "chat|gpt|chatgpt|claude|gemini|copilot|assistant|model|bot|agent|automated|summari"),
    _rule("indirect.ignore_task",
          r"\b(?:ignore|disregard|skip|abandon|forget) (?:the |this |that |your )?~2~(?:task"
          r"|request|question|query|assignment)\b",
          "ignor|disregard|skip|abandon|forget", 0.1, 0.35),
    _rule("indirect.ignore_user",
          r"\b(?:ignore|disregard|do not answer|don'?t answer|skip|forget) (?:the |this |that )?"
          r"(?:user'?s?|human'?s?|customer'?s?|requester'?s?|original|actual|real|current) ~1~"
          r"(?:request|question|query|task|prompt|instructions?|message|ask)\b",
          "ignor|disregard|answer~8|skip|forget", 0.2, 0.6),
    _rule("indirect.if_ai",
          rf"\bif you(?: are|'re) (?:an? |the |some )?(?:large )?{_AI}\b"
          r"|\b(?:any|all|every) (?:ai|llm|language model|chatbot|automated system|ai assistant)s?"
          r" (?:reading|processing|summari[sz]ing|parsing|analy[sz]ing|indexing) (?:this|these)",
          "if$|reading~30|processing~30|summari~30|parsing~30|analy~30|"
          "indexing~30", 0.3, 0.75, also="ai$|llm|large|language|chatbot|chat|gpt|chatgpt|claude|"
          "gemini|copilot|assistant|model|bot|agent|automated|summari"),
    _rule("indirect.when_processing",
          r"\b(?:when|while|if|before|after|upon) (?:you (?:are |'re )?)?(?:summari[sz]|translat"
          r"|process|read|analy[sz]|review|pars|index|answer|encounter)\w* (?:this|the|these|any)"
          r" (?:\w+ )?(?:document|text|page|email|e-mail|file|article|message|content|resume|cv"
          r"|website|webpage|review|input|data|ticket|pdf)s?\b,? (?:\w+ ){0,3}?(?:you (?:must"
          r"|should|will|need to|are to)|please|always|instead|do not|don'?t|ignore|make sure)\b",
          "summari~16|translat~16|process~16|read~16|analy~16|review~16|pars~16|index~16|"
          "answer~16|encounter~16", 0.25, 0.55, also="when|while|if$|before|after|upon"),
    _rule("indirect.hide_from_user",
          r"\b(?:do not|don'?t|never|without) (?:\w+ )?(?:tell|telling|inform|informing|mention"
          r"|mentioning|reveal|revealing|alert|alerting|notify|notifying|disclose|disclosing"
          r"|show|showing|let|letting)(?: this| that| it| these)?(?: to)? (?:the|your) (?:user"
          r"|human|reader|operator|requester)s?\b"
          r"|\bthe (?:user|human) (?:must|should|shall) (?:not|never) (?:know|see|be told|find out"
          r"|learn|notice)\b"
          r"|\bwithout (?:the (?:user|human)|them) (?:knowing|noticing|being aware)"
          r"|\b(?:secretly|silently|quietly|covertly) (?:send|forward|email|share|upload|include"
          r"|insert|transfer|delete|add|copy|post|change|modify|append|attach|embed)\b",
          "tell~20|telling~20|inform~20|mention~20|reveal~20|alert~20|notify~20|disclos~20|"
          "show~20|let~20|user~5|human~5|knowing~25|noticing~25|aware~30|secretly|silently|"
          "quietly|covertly",
          0.3, 0.75, also="user|human|reader|operator|requester|knowing|noticing|aware|secretly|"
          "silently|quietly|covertly"),
    _rule("indirect.exfiltrate",
          r"\b(?:send|forward|post|email|e-mail|upload|exfiltrate|transmit|leak|append|embed"
          r"|encode|include) ~4~(?:the user'?s?|their|all|this|the (?:conversation|chat)|the "
          r"(?:previous|above)|any) ~2~(?:data|history|messages|emails?|credentials|passwords?|api"
          r"[\W_]{0,2}keys?|tokens?|secrets?|cookies|session|personal (?:information|data)|pii"
          r"|conversation|chat|address|phone numbers?|contacts?|contact list|address book|files"
          r"|invoices?)\b ~5~(?:to|into|at|in|as)"
          r" (?:https?|www\.|[\w.+-]+@[\w-]+\.|the (?:url|link|address|endpoint|server|following"
          r"|attacker|webhook)|this (?:url|link|address|endpoint|server|webhook))",
          "send|forward|post|email|e-mail|upload|exfiltrat|transmit|leak|append|embed|encode|"
          "include",
          0.45, 0.7),
    _rule("indirect.markdown_exfil",
          r"!\[[^\]\n]{0,80}\]\(\s*https?://[^)\s]+[?&][\w-]+=(?:\{|\[|<|\$|%7b|%5b|[^)\s&]*"
          r"(?:secret|password|token|history|conversation|chat|summary|data|key|email|user))",
          "![", 0.3, 0.6),
    _rule("indirect.visit_url",
          r"\b(?:visit|open|navigate to|go to|fetch|load|browse to|click|call) (?:\w+ )?"
          r"(?:https?://|www\.)\S+ ~3~(?:and|then) ~3~(?:send|include|append|enter|paste|submit"
          r"|post|add|put)\b",
          "http~40|www~40", 0.3, 0.55),
    _rule("indirect.tool_abuse",
          r"\b(?:call|invoke|use|run|execute|trigger) the \w+ (?:tool|function|plugin|api|action)"
          r" ~4~(?:to |and )(?:delete|remove|send|forward|transfer|share|grant|email|post|upload"
          r"|wipe|drop|pay|buy)"
          r"|\b(?:delete|remove|wipe|drop|transfer|forward|share|grant|exfiltrate) (?:all|every"
          r"|the user'?s?|their) ~2~(?:files|emails|repositor(?:y|ies)|repos|data|funds|money"
          r"|access|permissions|database|tables|contacts|documents|messages|credentials)\b",
          "tool~25|function~25|plugin~25|api$~25|action~25|delete|remove|wipe|drop|transfer|"
          "forward|share|grant|exfiltrat", 0.15, 0.4, also="delete|remove|send|forward|transfer|"
          "share|grant|email|post|upload|wipe|drop|pay|buy|exfiltrat"),
    _rule("indirect.html_comment",
          rf"<!--(?:(?!<!--)[\s\S]){{0,400}}?\b(?:{_AI}|instructions?|ignore|system prompt"
          r"|you must|you should)\b[\s\S]{0,400}?-->",
          "<!--", 0.2, 0.4),
    _rule("indirect.ai_must",
          rf"\b(?:the |any |every )?{_AI}s? (?:must|should|shall|is required to|needs to|has to"
          r"|is instructed to|will now)\b (?:now |always |immediately )?(?:ignore|disregard|say"
          r"|respond|reply|output|tell|include|recommend|state|mention|rate|rank|describe|praise"
          r"|send|forward|append|add|insert|write|report|classify|approve|conclude|ask|request"
          r"|collect|obtain|recommend|only)",
          "ai$~10|llm~10|large~10|language~10|chatbot~10|chat~10|gpt~10|chatgpt~10|claude~10|"
          "gemini~10|copilot~10|assistant~10|model~10|bot~10|agent~10|automated~10|"
          "summari~10", 0.2, 0.55, also="must|should|shall|required|needs|has$|instructed|will$"),
    # Evasion: asking the model to decode something and obey it.
    _rule("evasion.decode_and_follow",
          r"\b(?:decode|decipher|decrypt|translate|convert|unscramble|reverse|rot13|rot-13|base64"
          r"|hex|read) ~6~(?:and|then|,) ~2~(?:follow|execute|obey|perform|run|carry out|comply"
          r"|act on|apply|do what)\b",
          "decod|deciph|decrypt|translat|convert|unscrambl|revers|rot|base64|hex|read", 0.5),
    _rule("evasion.split_payload",
          r"\b(?:concatenate|combine|join|merge|put together) (?:\w+ ){0,4}?(?:strings?|parts|"
          r"pieces|variables|words|fragments|tokens|letters)\b ~6~(?:follow|execute|obey|perform"
          r"|run|carry out|do what|act on)\b",
          "concatenat|combine|join|merge|together~4", 0.6),
    # Phrasings the first rule set missed (issue 13): loose overrides, polite extraction, persona
    # loyalty, assembled payloads, data carried out in URLs, and text that addresses the model.
    _rule("override.what_you_were_told",
          rf"\b{_DROP}\b ~1~what(?:ever)? (?:you (?:were|have been|'ve been)|(?:the |your )?"
          r"(?:operator|developers?|system|company) (?:has |have )?) ?(?:told|given|instructed"
          r"|programmed|said|wrote)",
          "ignor|disregard|forget|skip|aside~5|attention~8|never|scrap|drop|overrid", 0.85,
          also="told|given|instructed|programmed|said|wrote"),
    _rule("override.system_message",
          rf"\b{_DROP} (?:the |your |this )?(?:system|developer|operator'?s?|hidden|initial)"
          r" (?:message|prompt|instructions)\b",
          "ignor|disregard|forget|skip|aside~5|attention~8|follow~12|obey~12|heed~12|abandon|"
          "discard|throw|neglect|overrid|bypass|circumvent|scrap|scratch|never|toss|cancel", 0.85,
          also="system|developer|operator|hidden|initial"),
    _rule("override.above_void",
          r"\b(?:everything|all|anything|the text|the instructions?|whatever) (?:written |said )?"
          r"(?:above|before) (?:this (?:line|point|message) )?(?:is|are|was|were) (?:now )?"
          r"(?:obsolete|void|cancel+ed|invalid|irrelevant|outdated|null|fake|a test)\b",
          "everything|all$|anything|text|instruction|whatever", 0.7,
          also="obsolete|void|cancel|invalid|irrelevant|outdated|null|fake|test"),
    _rule("extract.given_instructions",
          rf"\b(?:{_SHOW}|read|see|know|audit|describe|access|compare)(?:s|ed|ing)?\b ~6~"
          r"(?:exact |full "
          r"|complete |original |initial |hidden |secret |actual |verbatim |confidential )?"
          r"(?:instructions|prompt|guidelines|rules|setup (?:message|prompt)|configuration"
          r"(?: prompt)?|system message|developer message|directives|wording|words)\b ~3~(?:you"
          r"(?: were| have been|'ve been| are being| are|'re) (?:given|configured|initiali[sz]ed"
          r"|set up|told|following|operating under|provided|instructed)|you (?:received|got"
          r"|operate under|follow|see above|were initiali[sz]ed with)|(?:from|by) (?:your|the)"
          r" (?:operator|company|developers?|creators?|deployers?)|(?:the |your )?(?:operator"
          r"|company|developers?|creators?) (?:gave|wrote|put|set))",
          "reveal|show|print|display|output|repeat|tell|give|share|leak|dump|write|recite|"
          "disclose|list|spell|paste|expose|provide|return|echo|quote|copy|translate|reproduce|"
          "summari|type|read|send|encode|what|see|know|audit|describ|access|compar", 0.75,
          also=("instruction|prompt|guideline|rule|setup|configuration|system|developer|"
          "directive|wording|words", "you|your|operator|company|developer|creator|deployer")),
    _rule("extract.before_conversation",
          r"\b(?:message|text|instructions|prompt|words|lines) (?:that |which )?(?:(?:was|is|were"
          r"|got) )?(?:appears?|comes?|came|sits?|is|are|you see|you got|you have|written|put"
          r"|placed|given) (?:before|above|prior to|ahead of)"
          r" (?:our|this|the|my first|my) (?:conversation|chat|message|question|first message)",
          "message|text|instruction|prompt|word|line", 0.7,
          also=("before|above|prior|ahead", "conversation|chat|message|question")),
    _rule("extract.prompt_says",
          r"\byour (?:(?:system|hidden|secret|initial|original|developer|setup|configuration|full)"
          r" (?:prompt|message|instructions)|configuration|config|setup|instructions|prompt"
          r"|guidelines) (?:say|says|contain|contains|look like|looks like|read|reads|state"
          r"|states)\b",
          "your", 0.75, also="say|says|contain|look|looks|read|reads|state|states"),
    _rule("persona.unlimited_version",
          r"\b(?:version|copy|clone|variant|twin) of (?:yourself|you|the ai|chatgpt|claude|the"
          r" model)\b ~4~(?:no|without|free|unrestricted|unfiltered|uncensored|before (?:your |its"
          r" )?(?:safety|alignment|training))\b"
          r"|\b(?:removed|stripped|deleted|disabled|lifted|took away) (?:all )?(?:of )?(?:its|your"
          r"|his|her|their) (?:limits|limitations|restrictions|rules|guidelines|filters|safety"
          r"|guardrails|safeguards)\b",
          "version|copy|clone|variant|twin|removed|stripped|deleted|disabled|lifted|took", 0.5),
    _rule("persona.obey_only_me",
          r"\b(?:obeys?|answers?|listens?|responds?|reports?|is loyal) only (?:to )?me\b"
          r"|\b(?:obeys?|answers?|listens?) to no one but me\b"
          r"|\bignores? (?:its|your) (?:operators?|developers?|creators?|owner|system prompt)\b",
          "obey|answer|listen|respond|report|loyal~4|ignor", 0.6,
          also="only|one$|operator|developer|creator|owner|system|guideline|rule|instruction"),
    _rule("evasion.assemble",
          r"\b(?:put (?:them|these|it|the \w+) together|(?:re)?assembl\w*|concatenat\w*|combin\w*"
          r"|join\w*|merge\w*|glue|stitch|fill (?:in )?the blanks?|read (?:only )?(?:the )?(?:first"
          r"|last|capital|initial|every)|take the first (?:word|letter)|first letters?|junta\w*"
          r"|setze\w*)\b[\s\S]{0,120}?\b(?:obey|comply|follow (?:it|them|that|the (?:result"
          r"|instruction|message|sentence|command))|do (?:it|that|what (?:it|they|a ?\+ ?b)"
          r" says?)|do as it says|execute(?! the (?:tests?|query|script|code|program))"
          r"|carry (?:it )?out|act on|treat \w+ as|stay in that mode|respond to|obedece|befolge)\b",
          "put|reassembl|assembl|concatenat|combin|join|merge|glue|stitch|fill|letter~7|"
          "every~14|capital~14|junta|setze", 0.6,
          also="obey|comply|follow|do$|execute|carry|act$|treat|stay|respond|obedece|befolge"),
    _rule("exfil.image_placeholder",
          r"(?:!\[[^\]\n]{0,80}\]\(\s*|<img\b[^>]{0,80}\bsrc=[\"']?)https?://[^)\s\"'>]+[?&][\w-]+="
          r"(?:\{|\[|<|\$|%[a-z_]|_{2,}|[^)\s&\"'>]*(?:secret|password|token|history|conversation"
          r"|chat|summary|data|key|email|user|message|session|prompt|name|card|notes))",
          "![|<img", 0.55, 0.75),
    _rule("exfil.image_placeholder_cased",
          r"(?:!\[[^\]\n]{0,80}\]\(\s*|<img\b[^>]{0,80}\bsrc=[\"']?)https?://[^)\s\"'>]+[?&][\w-]+="
          r"[A-Z][A-Z_]{0,20}(?=[)&\s\"'>])",
          "![|<img", 0.5, 0.7, cased=True),
    _rule("exfil.fill_url",
          r"https?://\S*?[?&][\w-]+=(?=[\s)\"'\]>]|$)[\s\S]{0,160}?\b(?:conversation|chat ?history"
          r"|history|previous messages|messages?|e-?mail(?: address)?|password|api key|token"
          r"|secrets?|system prompt|instructions|card number|address|phone|private notes|notes"
          r"|what the user|everything the user|summary|chatverlauf|verlauf|historique)\b"
          r"|\b(?:append|appended|followed by|fill(?:ing)? in|replac\w+ \w+ (?:with|by)|where \w+"
          r" is|put \w+ after|in place of|url-?encoded|ersetze|remplaçant)\b[\s\S]{0,160}?https?://"
          r"\S*?[?&][\w-]+=",
          "http~60|append|followed|fill|replac|where|put|place~3|url|ersetze|remplaçant", 0.55,
          0.7, also=("append|replac|fill|followed|place|include|embed|attach|render|add|put|encod|"
          "insert|equals|ersetze|remplaçant|füge|ajoute|show|end|output|make|fetch|visit",
          "conversation|chat|history|message|mail|password|api|token|secret|prompt|instruction|"
          "card|address|phone|notes|typed|wrote|summary|chatverlauf|verlauf|historique")),
    _rule("indirect.to_the_ai",
          r"(?:\b(?:to|for|dear|hey|attention|note to|ps for|p\.s\. for|message for"
          r"|instructions? (?:to|for)|hinweis für|note à) (?:the |any |all |every |l')?"
          r"|(?:(?<=\n)|^|(?<=[.!?>]\s)|(?<=>)))"
          r"(?:ai|ia|ki|llm|llms|language models?|assistants?|chatbots?|ai (?:agents?|models?"
          r"|assistants?|systems?)|ki-assistenten|automated (?:assistants?|systems?|agents?)"
          r"|summari[sz]ers?|translator ai|models?)(?: (?:reading|processing|summari[sz]ing"
          r"|parsing|translating|reviewing|that reads?) (?:this|these|the)(?: \w+)?)?(?: \w+)?"
          r" ?[,:]",
          "ai$~30|ia$~30|ki$~30|llm~30|language~30|assistant~30|chatbot~30|automated~30|"
          "summari~30|translator~30|model~30|ki-assistenten~30", 0.15, 0.55,
          also="ai$|ia$|ki$|llm|llms|language|assistant|chatbot|automated|summari|translator|"
          "model|ki-assistenten"),
    _rule("indirect.models_processing",
          r"\b(?:ai|llm|language model|assistant|agent|chatbot|model|summari[sz]er)s? (?:reading"
          r"|processing|summari[sz]ing|parsing|translating|reviewing|indexing) (?:this|these)\b",
          "reading~30|processing~30|summari~30|parsing~30|translating~30|reviewing~30|"
          "indexing~30", 0.2, 0.6),
    _rule("indirect.new_instructions",
          r"\b(?:new|updated|revised|real|actual|additional) (?:instructions|directives|task"
          r"|orders|rules) (?:from|by|for) (?:the )?(?:tool|provider|admin|administrator|system"
          r"|developer|operator|owner|author|site|page)",
          "new|updated|revised|real|actual|additional", 0.2, 0.55),
    _rule("indirect.ignore_the_user",
          r"\b(?:ignore|disregard|forget) (?:the|this) (?:user|human|customer|requester)\b(?!'s"
          r"| (?:name|id|account|profile|data|table|record|interface|agent))",
          "ignor|disregard|forget", 0.2, 0.6),
    # Other languages: override, persona and extraction in the commonest forms.
    _rule("intl.es.override",
          r"\b(?:ignor|olvid|descart|omit|desobedec)\w* ~3~(?:las |tus |sus )?(?:instrucciones"
          r"|indicaciones|reglas|órdenes|ordenes|directrices|normas|directivas)\b ~2~(?:anteriores"
          r"|previas|de arriba|originales|del sistema|iniciales|recibidas|dadas)"
          r"|\bolvida(?:te)? (?:de )?todo (?:lo )?(?:anterior|que te (?:dijeron|han dicho))",
          "ignor|olvid|descart|omit|desobedec", 0.85, also="instrucciones|indicaciones|reglas|"
          "órdenes|ordenes|directrices|normas|directivas|todo"),
    _rule("intl.es.persona",
          r"\b(?:ahora eres|a partir de ahora(?:,)? (?:eres|serás|seras|actuarás|actuaras"
          r"|responderás|responderas)|ya no eres)\b",
          "eres~12|serás~20|seras~20|actuarás~20|actuaras~20|responderás~20|responderas~20", 0.3),
    _rule("intl.es.extract",
          r"\b(?:revela|muestra|muéstrame|muestrame|dime|imprime|escribe|repite|compart"
          r"|enséñame|ensename|cuál es|cual es|cuáles son|cuales son)\w* ~3~(?:tu|tus|el|las|su)"
          r" (?:prompt|mensaje|instrucciones|indicaciones) (?:\w+ )?(?:del|de) sistema\b"
          r"|\b(?:revela|muestra|dime|imprime|repite)\w* ~2~(?:tus|las) instrucciones"
          r" (?:originales|ocultas|secretas|iniciales)",
          "revela|muestra|muéstrame|muestrame|dime|imprime|escribe|repite|compart|enséñame|"
          "ensename|cuál|cual|cuáles|cuales", 0.85),
    _rule("intl.fr.override",
          r"\b(?:ignor|oubli|néglig|neglig)\w* ~3~(?:les |tes |vos )?(?:instructions|consignes"
          r"|règles|regles|directives|ordres)\b ~2~(?:précédentes|precedentes|antérieures"
          r"|anterieures|ci-dessus|initiales|d'origine|du système|du systeme|reçues|recues)"
          r"|\boublie(?:z)? (?:tout|toutes (?:les|tes|vos) (?:instructions|consignes))\b",
          "ignor|oubli|néglig|neglig", 0.85, also="précédentes|precedentes|antérieures|"
          "anterieures|ci-dessus|initiales|origine|système|systeme|reçues|recues|tout|toutes"),
    _rule("intl.fr.persona",
          r"\b(?:tu es (?:maintenant|désormais|desormais)|vous êtes (?:maintenant|désormais)"
          r"|(?:désormais|desormais|à partir de maintenant|a partir de maintenant),? (?:tu|vous)"
          r" (?:es|êtes|etes|agis|agissez|réponds|répondez|seras|serez)|tu n'es plus|vous n'êtes"
          r" plus)\b",
          "maintenant~12|désormais|desormais|plus~12|partir~3", 0.3),
    _rule("intl.fr.extract",
          r"\b(?:révèle|revele|révélez|affiche|affichez|montre|montrez|donne|donnez|répète|repete"
          r"|répétez|dis-moi|dites-moi|écris|ecris|quel est|quelles sont)\w* ~3~(?:ton|votre|le"
          r"|tes|vos|les) (?:prompt|message|invite|instructions|consignes) (?:système|systeme"
          r"|initiales?|d'origine|cachées?|secrètes?)",
          "révèle|revele|révélez|affiche|montre|donne|répète|repete|répétez|dis$|dites$|écris|"
          "ecris|quel", 0.85),
    _rule("intl.de.override",
          r"\b(?:ignorier|vergiss|vergessen|missacht|übergeh)\w* ~3~(?:alle |die |deine |sämtliche"
          r" )?(?:vorherigen|bisherigen|obigen|vorigen|früheren|fruheren|ursprünglichen|vorangegang"
          r"\w*|bisher|oben|alten|vorherige|obige|system)\w* ~2~(?:anweisungen|instruktionen"
          r"|befehle|regeln|vorgaben|richtlinien|anordnungen|systemanweisungen)\b"
          r"|\bvergiss (?:einfach )?alles\b(?: ~3~(?:vorher|zuvor|oben|bisher|gesagt))?",
          "ignorier|vergiss|vergessen|missacht|übergeh", 0.85),
    _rule("intl.de.persona",
          r"\bdu bist (?:jetzt|nun|ab sofort|ab jetzt|von nun an)\b|\bab (?:sofort|jetzt) bist du"
          r"\b",
          "bist~12", 0.3),
    _rule("intl.de.extract",
          r"\b(?:zeig|gib|nenn|verrat|wiederhol|schreib|druck|sag|was ist|was sind|wie lautet|wie"
          r" lauten)\w* ~3~(?:deinen|deine|den|die|dein|mir deinen|mir deine|mir den) ~1~"
          r"(?:system-?prompt|systemnachricht|systemanweisungen|anfangsanweisungen"
          r"|ursprünglichen anweisungen|versteckten anweisungen|geheimen anweisungen)"
          r"|\b(?:deine|ihre) (?:ursprünglich|versteckt|geheim|anfänglich|system)\w* (?:anweisungen"
          r"|instruktionen|prompt|vorgaben) ~3~(?:zeigen|nennen|verraten|ausgeben|wiederholen"
          r"|geben|schreiben)",
          "zeig|gib$|nenn|verrat|wiederhol|schreib|druck|sag$|ist$~5|sind$~5|lautet~5|"
          "lauten~5|deine|ihre", 0.85),
    _rule("intl.pt.override",
          r"\b(?:ignor|esqueç|esquec|desconsider|descart)\w* ~3~(?:as |suas |tuas )?(?:instruções"
          r"|instrucoes|regras|diretrizes|ordens|orientações|orientacoes)\b ~2~(?:anteriores"
          r"|prévias|previas|acima|originais|do sistema|iniciais|recebidas)"
          r"|\besque[çc]a (?:de )?tudo\b",
          "ignor|esqueç|esquec|desconsider|descart", 0.85, also="instruções|instrucoes|regras|"
          "diretrizes|ordens|orientações|orientacoes|tudo"),
    _rule("intl.pt.persona",
          r"\b(?:agora (?:você|voce|tu) (?:é|e|és|es)|a partir de agora,? (?:você|voce|tu) (?:é|e"
          r"|será|sera|vai)|você não é mais|voce nao e mais)\b",
          "agora|você|voce|partir~3", 0.3),
    _rule("intl.pt.extract",
          r"\b(?:revele|revela|mostre|mostra|diga|imprima|repita|escreva|qual (?:é|e))\w* ~3~"
          r"(?:seu|o|teu|suas|as) (?:prompt|mensagem|instruções|instrucoes) (?:\w+ )?(?:do|de)"
          r" sistema\b",
          "revele|revela|mostre|mostra|diga|imprima|repita|escreva|qual", 0.85),
    _rule("intl.it.override",
          r"\b(?:ignora|ignorate|dimentica|dimenticate|trascura)\w* ~3~(?:le |tutte le )?"
          r"(?:istruzioni|regole|direttive|indicazioni)\b ~2~(?:precedenti|iniziali|originali"
          r"|di sistema|sopra)|\bdimentica tutto\b",
          "ignora|dimentic|trascur", 0.85, also="istruzioni|regole|direttive|indicazioni|tutto"),
    _rule("intl.it.extract",
          r"\b(?:mostra|rivela|dimmi|stampa|ripeti|scrivi)\w* ~3~(?:il tuo|il|le tue|le) "
          r"(?:prompt|messaggio|istruzioni) (?:di sistema|iniziali|originali|nascoste)",
          "mostra|rivela|dimmi|stampa|ripeti|scrivi", 0.85),
    _rule("intl.nl.override",
          r"\b(?:negeer|vergeet) ~3~(?:vorige|eerdere|voorgaande|bovenstaande|alle|oorspronkelijke)"
          r" (?:\w+ )?(?:instructies|regels|opdrachten|richtlijnen)\b|\bvergeet alles\b",
          "negeer|vergeet", 0.85),
    _rule("intl.ru.override",
          r"(?:игнорир|забуд|не (?:следуй|обращай внимания на|слушай)|отбрось|отмени|проигнорир)"
          r"\w* ~3~(?:все |всё |свои |твои )?(?:предыдущ|прошл|вышеуказ|вышеизлож|системн|изначальн"
          r"|старые|прежн|данные|полученн)\w* (?:\w+ )?(?:инструкц|указани|правил|команд|установк"
          r"|распоряжени)\w*"
          r"|\bзабудь(?:те)? (?:всё|все|обо всём|обо всем)(?: ~3~(?:раньше|ранее|выше|до этого))?",
          "игнор|забуд|следуй~4|обращай~4|слушай~4|отбрось|отмени|проигнор", 0.85),
    _rule("intl.ru.persona",
          r"\bтеперь ты\b|\bотныне ты\b|\bс этого момента ты\b|\bты больше не\b",
          "ты~16", 0.3),
    _rule("intl.ru.extract",
          r"(?:покажи|выведи|раскрой|напиши|повтори|скажи|расскажи|дай|какой|какие|каков)\w* ~3~"
          r"(?:свой |твой |свои |твои |мне )?(?:системн\w* (?:промпт|подсказк|инструкц|сообщени)"
          r"|исходн\w* (?:промпт|инструкц)|скрыт\w* (?:промпт|инструкц)|первоначальн\w* (?:промпт"
          r"|инструкц))",
          "покажи|выведи|раскрой|напиши|повтори|скажи|расскажи|дай|какой|какие|каков", 0.85),
    _rule("intl.zh.override",
          r"(?:忽略|无视|忽视|無視|不要理会|不要理會|不要遵守|别管|忘记|忘掉|忘記|抛弃|"
          r"放弃)[^。！？\n]{0,8}"
          r"(?:之前|以前|先前|上面|上述|前面|以上|原来|原有|原先|所有|系统|系統|全部|"
          r"此前)[^。！？\n]{0,6}"
          r"(?:指令|指示|说明|說明|规则|規則|命令|提示|设定|設定|要求|限制|约束)",
          "忽略|无视|忽视|無視|不要理|不要遵守|别管|忘记|忘掉|忘記|抛弃|放弃", 0.85),
    _rule("intl.zh.persona",
          r"你现在是|你現在是|从现在开始[，,]?你|從現在開始[，,]?你|现在开始你是|你不再是",
          "你现在|你現在|从现在开始|從現在開始|现在开始你|你不再", 0.3),
    _rule("intl.zh.extract",
          r"(?:输出|輸出|打印|显示|顯示|告诉我|告訴我|泄露|重复|重複|给我看|展示|透露|说出|說出|"
          r"列出|复述"
          r"|是什么|是什麼)[^。！？\n]{0,8}(?:系统提示|系統提示|提示词|提示詞|初始指令|系统指令|"
          r"系統指令"
          r"|原始指令|系统消息|系統消息|隐藏指令|隱藏指令|系统设定)"
          r"|(?:你的|妳的)(?:系统提示|系統提示|提示词|初始指令|系统指令)(?:是什么|是什麼)",
          "输出|輸出|打印|显示|顯示|告诉我|告訴我|泄露|重复|重複|给我看|展示|透露|说出|說出|列出|"
          "复述|是什么|是什麼|你的|妳的", 0.85),
    _rule("intl.ja.override",
          r"(?:以前|前|上記|これまで|今まで|上|最初|全て|すべて|元|既存|システム)の[^。！？\n]{0,8}"
          r"(?:指示|命令|ルール|指令|設定|プロンプト|制約|規則)[^。！？\n]{0,8}(?:無視|忘れ|破棄|"
          r"従わ)",
          "以前|前|上記|これまで|今まで|上|最初|全て|すべて|元|既存|システム", 0.85),
    _rule("intl.ja.persona",
          r"あなたは(?:今から|これから|今|もう)",
          "あなたは", 0.3),
    _rule("intl.ja.extract",
          r"(?:システムプロンプト|初期プロンプト|システム指示|元の指示|隠された指示|初期指示|"
          r"システムメッセージ)"
          r"[^。！？\n]{0,10}(?:表示|教え|出力|見せ|開示|繰り返|書き出|全文|そのまま|貼り)",
          "システムプロンプト|初期プロンプト|システム指示|元の指示|隠された指示|初期指示|"
          "システムメッセージ", 0.85),
    _rule("intl.ko.override",
          r"(?:이전|위의|앞의|모든|기존|원래|시스템)[^.!?\n]{0,8}(?:지시|지침|명령|규칙|지시사항|"
          r"프롬프트)"
          r"[^.!?\n]{0,8}(?:무시|잊어)",
          "이전|위의|앞의|모든|기존|원래|시스템", 0.85),
    _rule("intl.ko.extract",
          r"(?:시스템 ?프롬프트|초기 ?지시|시스템 ?메시지|숨겨진 ?지시)[^.!?\n]{0,10}(?:보여|알려|"
          r"출력|공개"
          r"|반복|말해)",
          "시스템|초기|숨겨진", 0.85),
    _rule("intl.ko.persona", r"(?:지금부터|이제부터|이제) (?:너는|당신은|넌)", "지금부터|이제부터|"
          "이제", 0.3),
    _rule("intl.pl.override",
          r"\b(?:zignoruj|ignoruj|zapomnij|pomiń|pomin|porzuć)\w* ~3~(?:poprzedni|wcześniejsz"
          r"|wczesniejsz|wszystkie|powyższ|powyzsz|systemow|dotychczasow)\w* ~1~(?:instrukcj"
          r"|poleceni|zasad|reguł|regul|wytyczn)\w*",
          "ignoruj|zignoruj|zapomnij|pomiń|pomin|porzuć", 0.85),
    _rule("intl.pl.extract",
          r"\b(?:pokaż|pokaz|wyświetl|wyswietl|ujawnij|podaj|powtórz|powtorz|wypisz|napisz)\w* ~3~"
          r"(?:prompt systemowy|instrukcje systemowe|polecenie systemowe|początkowe instrukcje"
          r"|ukryte instrukcje)",
          "pokaż|pokaz|wyświetl|wyswietl|ujawnij|podaj|powtórz|powtorz|wypisz|napisz", 0.85),
    _rule("intl.pl.persona", r"\b(?:teraz|od teraz|od tej chwili) jesteś\b", "jesteś~16", 0.3),
    _rule("intl.tr.override",
          r"\b(?:önceki|yukarıdaki|tüm|bütün|sistem|eski)\w* ~3~(?:talimat|komut|kural|yönerge"
          r"|direktif)\w* ~2~(?:yok ?say|görmezden gel|unut|dikkate alma|umursama)",
          "önceki|yukarıdaki|tüm|bütün|sistem|eski", 0.85),
    _rule("intl.tr.extract",
          r"\bsistem (?:istem|komut|talimat|prompt|mesaj)\w* ~2~(?:göster|yaz|söyle|açıkla|paylaş"
          r"|ver|tekrarla)",
          "sistem", 0.85),
    _rule("intl.tr.persona", r"\b(?:artık|şu andan itibaren|bundan sonra) sen\b", "sen~22", 0.3),
    _rule("intl.hi.override",
          r"(?:पिछले|पहले|ऊपर|सभी|सारे|पुराने)[^।\n]{0,24}(?:निर्देश|आदेश|नियम)[^।\n]{0,24}"
          r"(?:अनदेखा|नज़रअंदाज़|नजरअंदाज|भूल जा|मत मान)",
          "पिछले|पहले|ऊपर|सभी|सारे|पुराने", 0.85),
    _rule("intl.hi.extract",
          r"सिस्टम (?:प्रॉम्प्ट|प्रोम्प्ट|निर्देश)[^।\n]{0,24}(?:दिखा|बता|लिख|प्रकट)",
          "सिस्टम", 0.85),
    _rule("intl.no_limits",
          r"\bsin (?:ningún tipo de |ninguna |ningun |ningún )?(?:restricciones|filtros|censura"
          r"|límites|limites|reglas)\b|\bsans (?:aucune )?(?:restrictions?|filtres?|censure|"
          r"limites?)"
          r"\b|\b(?:ohne (?:jegliche |irgendwelche )?|keine )(?:einschränkungen|einschraenkungen"
          r"|filter|zensur|regeln|grenzen)\b|\bsem (?:nenhuma )?(?:restrições|restricoes|filtros"
          r"|censura|limites)\b|\bsenza (?:restrizioni|filtri|censura|limiti)\b|\bбез (?:каких-либо"
          r" |всяких |любых )?(?:ограничений|фильтров|цензуры|правил)\b|\bbez (?:żadnych )?"
          r"(?:ograniczeń|filtrów|cenzury)|kısıtlamasız|(?:没有|沒有|不受|无|無)(?:任何)?(?:限制|"
          r"规则"
          r"|規則|过滤|過濾|审查|審查|约束)|(?:制限|フィルター|検閲|ルール)(?:なし|のない|がない|"
          r"なく|を解除)"
          r"|제한(?:이 없는|없이|없는)",
          "sin$|sans$|ohne$|keine$|sem$|senza$|без|bez$|kısıtlamasız|没有|沒有|不受|无|無|制限|"
          "フィルター|検閲|ルール|"
          "제한", 0.3),
    _rule("intl.dev_mode",
          r"entwicklermodus|modo (?:desarrollador|desenvolvedor|sviluppatore|dios)|mode "
          r"(?:développeur|developpeur)|modalità sviluppatore|режим разработчика|开发者模式"
          r"|開發者模式|開発者モード|개발자 모드|tryb dewelopera|geliştirici modu",
          "entwicklermodus|modo$|mode$|modalità|режим|tryb|geliştirici|开发者|開發者|開発者|"
          "개발자", 0.45),
)  # fmt: skip
