from django.contrib import admin

from usage.models import Quota


class _HoldsFor(admin.SimpleListFilter):
    title = "applies to"
    parameter_name = "for"

    def lookups(self, request, model_admin):
        return [("member", "A member"), ("group", "The members of a group")]

    def queryset(self, request, queryset):
        if self.value() == "member":
            return queryset.filter(user__isnull=False)
        if self.value() == "group":
            return queryset.filter(group__isnull=False)
        return queryset


@admin.register(Quota)
class QuotaAdmin(admin.ModelAdmin):
    """Quotas per member and per group. A member is held to the lowest limit that applies to
    them (their own, each of their groups'); where none is set, the site's QUOTA_* default."""

    list_display = ["holder", "tokens_per_day", "tokens_per_month", "requests_per_minute"]
    list_filter = [_HoldsFor]
    search_fields = ["user__username", "group__name"]
    autocomplete_fields = ["user", "group"]
    list_select_related = ["user", "group"]
    fieldsets = [
        (
            None,
            {
                "fields": ["user", "group"],
                "description": "Choose a member, or a group: a group's quota holds for each of "
                "its members (not for the group as a whole). Where several quotas apply to a "
                "member, the lowest limit of each kind wins. Staff are exempt while "
                "QUOTA_EXEMPT_STAFF is true. Days and months are UTC.",
            },
        ),
        ("Limits", {"fields": ["tokens_per_day", "tokens_per_month", "requests_per_minute"]}),
    ]

    @admin.display(description="for", ordering="user__username")
    def holder(self, obj: Quota) -> str:
        return f"member {obj.user}" if obj.user_id else f"group {obj.group}"
