// The flat index of this invocation in a 1D or 2D grid of workgroups along x (then y, when one row of
// groups would pass maxComputeWorkGroupCount[0]): groups_x is the grid's width, from the push
// constants. The host sizes the grid (ceil(items / local size) groups) and the kernel returns for an
// index past its item count. (A macro: the expression stays in the caller, as written there before.)
#define cd_invocation(groups_x) ((gl_WorkGroupID.y * (groups_x) + gl_WorkGroupID.x) * gl_WorkGroupSize.x + gl_LocalInvocationID.x)
